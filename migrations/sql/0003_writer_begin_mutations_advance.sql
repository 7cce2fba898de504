-- Ripple's own objects, version 3: the writer's bookkeeping in fewer
-- statements. Applied by migrations.Migrate inside one transaction that
-- holds Ripple's advisory lock; never edit an applied file, add a new one.

-- ripple.begin_mutations (version 2) gets a third argument, p_advance
-- (default false, so that writers of earlier versions, which call it with
-- two, get what they always got). With p_advance true it also advances the
-- clients' last_mutation_id, in the same call: the caller records every
-- mutation it is told to run (applied or rejected) in the same transaction,
-- or rolls the transaction back, so the ids can advance as soon as the
-- group's mutations are known, and the writer needs no UPDATE of
-- ripple.clients of its own. And it creates a client's row only when it is
-- missing (version 2 tried to create it every time).
--
-- Element i of p_client_ids and p_mutation_ids is one mutation; the pairs
-- must be distinct. For every client named, in client_id order (so two
-- groups that share clients cannot deadlock on these rows), it locks the
-- client's row of ripple.clients (FOR UPDATE; creating it first when the
-- client is new). The lock serialises one client's mutations across every
-- writer until the transaction ends. With p_advance, when a client's first
-- mutation of the group is the one after its last (the usual case), one
-- UPDATE takes the lock and advances the row at once (UPDATE ... WHERE
-- last_mutation_id = that id - 1), and a second one advances it past the
-- client's further mutations of the group, if any; only otherwise (a retry,
-- an id ahead, a new client, a row another transaction is advancing) is the
-- row locked and read first. Clients are handled one at a time, in order:
-- a set-based form of the whole group (window functions over the arrays)
-- measured slower, as Postgres planned it again at every call for small
-- groups.
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
-- out of order. With p_advance, when it returns, each client's
-- last_mutation_id is the id of its last mutation to run (unchanged when
-- none is).
DROP FUNCTION ripple.begin_mutations(text[], bigint[]);
CREATE FUNCTION ripple.begin_mutations(p_client_ids text[], p_mutation_ids bigint[], p_advance boolean DEFAULT false)
RETURNS TABLE (o_ord integer, o_expected bigint, o_status text, o_code text,
               o_message text, o_result text, o_xid text)
LANGUAGE plpgsql AS $$
DECLARE
    v_client text;   -- the client of the rows being answered
    v_last   bigint; -- its last_mutation_id before this call
    v_set    bigint; -- its last_mutation_id now
    v_next   bigint; -- the id its next mutation must have
    r        record;
BEGIN
    IF coalesce(array_length(p_client_ids, 1), 0) <> coalesce(array_length(p_mutation_ids, 1), 0) THEN
        RAISE EXCEPTION 'ripple.begin_mutations: % client ids but % mutation ids',
            coalesce(array_length(p_client_ids, 1), 0), coalesce(array_length(p_mutation_ids, 1), 0)
            USING ERRCODE = '22023';
    END IF;
    FOR r IN
        SELECT t.ord::integer AS ord, t.cid, t.mid
        FROM unnest(p_client_ids, p_mutation_ids) WITH ORDINALITY AS t(cid, mid, ord)
        ORDER BY t.cid, t.mid, t.ord
    LOOP
        IF v_client IS DISTINCT FROM r.cid THEN
            IF p_advance AND v_next - 1 <> v_set THEN
                UPDATE ripple.clients SET last_mutation_id = v_next - 1, updated_at = now()
                WHERE client_id = v_client;
            END IF;
            v_client := r.cid;
            v_last := NULL;
            IF p_advance THEN
                -- Usually the client's first mutation here is the next one:
                -- then one UPDATE both locks the row and advances it.
                UPDATE ripple.clients SET last_mutation_id = r.mid, updated_at = now()
                WHERE client_id = r.cid AND last_mutation_id = r.mid - 1;
                IF FOUND THEN
                    v_last := r.mid - 1;
                    v_set := r.mid;
                END IF;
            END IF;
            IF v_last IS NULL THEN
                SELECT cl.last_mutation_id INTO v_last FROM ripple.clients cl WHERE cl.client_id = r.cid FOR UPDATE;
                IF NOT FOUND THEN
                    INSERT INTO ripple.clients (client_id) VALUES (r.cid) ON CONFLICT DO NOTHING;
                    SELECT cl.last_mutation_id INTO v_last FROM ripple.clients cl WHERE cl.client_id = r.cid FOR UPDATE;
                END IF;
                v_set := v_last;
            END IF;
            v_next := v_last + 1;
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
    IF p_advance AND v_next - 1 <> v_set THEN
        UPDATE ripple.clients SET last_mutation_id = v_next - 1, updated_at = now()
        WHERE client_id = v_client;
    END IF;
END
$$;
