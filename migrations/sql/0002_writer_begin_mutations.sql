-- Ripple's own objects, version 2: the writer's bookkeeping in one call.
-- Applied by migrations.Migrate inside one transaction that holds
-- Ripple's advisory lock; never edit an applied file, add a new one.

-- ripple.begin_mutations starts the exactly-once protocol for a group of
-- mutations that run in one transaction (the writer's group commit; a group
-- of one for a mutation run alone). Element i of p_client_ids and
-- p_mutation_ids is one mutation; the pairs must be distinct.
--
-- For every client named it makes sure the client's row of ripple.clients
-- exists and locks it, in client_id order (so two groups that share clients
-- cannot deadlock on these rows). The lock serialises one client's mutations
-- across every writer until the transaction ends.
--
-- It returns one row per mutation (o_ord is its 1-based position in the
-- arrays), in (client_id, mutation_id) order:
--   o_expected  the mutation id the client's next mutation must have at this
--               point of the group, counting the earlier mutations of the
--               same client in the group that are in order (the caller
--               records every one of them, applied or rejected);
--   o_status .. o_xid  the recorded outcome when ripple.mutations already
--               holds this mutation (NULL o_status otherwise).
-- A mutation is to be run when o_status is NULL and its id equals
-- o_expected; one with a recorded outcome is answered with it; any other is
-- out of order.
CREATE FUNCTION ripple.begin_mutations(p_client_ids text[], p_mutation_ids bigint[])
RETURNS TABLE (o_ord integer, o_expected bigint, o_status text, o_code text,
               o_message text, o_result text, o_xid text)
LANGUAGE plpgsql AS $$
DECLARE
    v_client text;
    v_prev   text;
    v_next   bigint;
    r        record;
BEGIN
    IF coalesce(array_length(p_client_ids, 1), 0) <> coalesce(array_length(p_mutation_ids, 1), 0) THEN
        RAISE EXCEPTION 'ripple.begin_mutations: % client ids but % mutation ids',
            coalesce(array_length(p_client_ids, 1), 0), coalesce(array_length(p_mutation_ids, 1), 0)
            USING ERRCODE = '22023';
    END IF;
    FOR v_client IN SELECT DISTINCT u.c FROM unnest(p_client_ids) AS u(c) ORDER BY 1 LOOP
        INSERT INTO ripple.clients (client_id) VALUES (v_client) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM ripple.clients cl WHERE cl.client_id = v_client FOR UPDATE;
    END LOOP;
    FOR r IN
        SELECT t.ord::integer AS ord, t.cid, t.mid, cl.last_mutation_id AS last
        FROM unnest(p_client_ids, p_mutation_ids) WITH ORDINALITY AS t(cid, mid, ord)
        JOIN ripple.clients cl ON cl.client_id = t.cid
        ORDER BY t.cid, t.mid, t.ord
    LOOP
        IF v_prev IS DISTINCT FROM r.cid THEN
            v_prev := r.cid;
            v_next := r.last + 1;
        END IF;
        o_ord := r.ord;
        o_expected := v_next;
        o_status := NULL; o_code := NULL; o_message := NULL; o_result := NULL; o_xid := NULL;
        IF r.mid < v_next THEN
            SELECT m.status, m.code, m.message, m.result::text, m.ripple_xid::text
            INTO o_status, o_code, o_message, o_result, o_xid
            FROM ripple.mutations m
            WHERE m.client_id = r.cid AND m.mutation_id = r.mid;
        ELSIF r.mid = v_next THEN
            v_next := v_next + 1;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
