-- Ripple's own objects, version 3: the writer's bookkeeping in fewer
-- statements. Applied by migrations.Migrate inside one transaction that
-- holds Ripple's advisory lock; never edit an applied file, add a new one.

-- ripple.claim_mutations does what ripple.begin_mutations (version 2) does,
-- and also advances the clients' last_mutation_id, in the same call: the
-- caller records every mutation it is told to run (applied or rejected) in
-- the same transaction, or rolls the transaction back, so the ids can
-- advance as soon as the group's mutations are known. The writer then needs
-- no UPDATE of ripple.clients of its own. And it runs a fixed number of
-- statements per call, whatever the number of clients, where
-- begin_mutations ran two per client.
-- ripple.begin_mutations stays, unchanged, for writers of earlier versions:
-- both lock the same rows, so old and new writers can share a database
-- (while both kinds run, two of them creating the same new client at once
-- may deadlock; Postgres detects it and the writer runs the transaction
-- again).
--
-- Element i of p_client_ids and p_mutation_ids is one mutation; the pairs
-- must be distinct. The clients' rows of ripple.clients are created for new
-- clients, then locked (FOR UPDATE), both in client_id order, so two groups
-- that share clients cannot deadlock on these rows. The lock serialises one
-- client's mutations across every writer until the transaction ends.
--
-- It returns one row per mutation (o_ord is its 1-based position in the
-- arrays), in (client_id, mutation_id) order:
--   o_expected  the mutation id the client's next mutation must have at this
--               point of the group, counting the earlier mutations of the
--               same client in the group that are in order;
--   o_status .. o_xid  the recorded outcome when ripple.mutations already
--               holds this mutation (NULL o_status otherwise).
-- A mutation is to be run when o_status is NULL and its id equals
-- o_expected; one with a recorded outcome is answered with it; any other is
-- out of order. When it returns, each client's last_mutation_id is the id of
-- its last mutation to run (unchanged when none is).
CREATE FUNCTION ripple.claim_mutations(p_client_ids text[], p_mutation_ids bigint[])
RETURNS TABLE (o_ord integer, o_expected bigint, o_status text, o_code text,
               o_message text, o_result text, o_xid text)
LANGUAGE plpgsql AS $$
DECLARE
    v_clients text[];   -- the distinct clients, in client_id order
    v_locked  text[];   -- the clients whose rows are locked
    v_lasts   bigint[]; -- and their last_mutation_id before this call
    v_adv     text[];   -- the clients that advance
    v_to      bigint[]; -- and their new last_mutation_id
    r         record;
BEGIN
    IF coalesce(array_length(p_client_ids, 1), 0) <> coalesce(array_length(p_mutation_ids, 1), 0) THEN
        RAISE EXCEPTION 'ripple.claim_mutations: % client ids but % mutation ids',
            coalesce(array_length(p_client_ids, 1), 0), coalesce(array_length(p_mutation_ids, 1), 0)
            USING ERRCODE = '22023';
    END IF;
    -- One statement for the whole group, not one per client: new clients
    -- get their row, then every row is locked, both in client_id order.
    SELECT array_agg(DISTINCT u.c ORDER BY u.c) INTO v_clients FROM unnest(p_client_ids) AS u(c);
    INSERT INTO ripple.clients (client_id) SELECT u.c FROM unnest(v_clients) AS u(c) ON CONFLICT DO NOTHING;
    SELECT array_agg(l.client_id ORDER BY l.client_id), array_agg(l.last_mutation_id ORDER BY l.client_id)
    INTO v_locked, v_lasts
    FROM (SELECT cl.client_id, cl.last_mutation_id FROM ripple.clients cl
          WHERE cl.client_id = ANY (v_clients) ORDER BY cl.client_id FOR UPDATE) l;
    IF coalesce(array_length(v_locked, 1), 0) <> coalesce(array_length(v_clients, 1), 0) THEN
        RAISE EXCEPTION 'ripple.claim_mutations: rows of ripple.clients missing' USING ERRCODE = 'P0002';
    END IF;
    -- A client's mutations with ids above its last one run while they
    -- continue it without a gap: sorted, the i-th of them runs when its id
    -- is last + i. Those at or below the last one are looked up (by primary
    -- key, one at a time: they are rare, and a join could be planned as a
    -- scan of the whole log).
    FOR r IN
        WITH m AS (
            SELECT u.ord::integer AS ord, u.cid, u.mid, c.last,
                   u.mid > c.last AND u.mid - c.last = row_number() OVER (PARTITION BY u.cid, u.mid > c.last ORDER BY u.mid, u.ord) AS runs
            FROM unnest(p_client_ids, p_mutation_ids) WITH ORDINALITY AS u(cid, mid, ord)
            JOIN unnest(v_locked, v_lasts) AS c(cid, last) ON c.cid = u.cid
        )
        SELECT m.*, count(*) FILTER (WHERE m.runs) OVER (PARTITION BY m.cid) AS k FROM m
        ORDER BY m.cid, m.mid, m.ord
    LOOP
        o_ord := r.ord;
        o_status := NULL; o_code := NULL; o_message := NULL; o_result := NULL; o_xid := NULL;
        IF r.runs THEN
            o_expected := r.mid;
            IF v_adv[array_upper(v_adv, 1)] IS DISTINCT FROM r.cid THEN
                v_adv := v_adv || r.cid;
                v_to := v_to || r.mid;
            ELSE
                v_to[array_upper(v_to, 1)] := r.mid;
            END IF;
        ELSIF r.mid > r.last THEN
            o_expected := r.last + r.k + 1;
        ELSE
            o_expected := r.last + 1;
            SELECT m.status, m.code, m.message, m.result::text, m.ripple_xid::text
            INTO o_status, o_code, o_message, o_result, o_xid
            FROM ripple.mutations m
            WHERE m.client_id = r.cid AND m.mutation_id = r.mid;
        END IF;
        RETURN NEXT;
    END LOOP;
    UPDATE ripple.clients cl SET last_mutation_id = a.id, updated_at = now()
    FROM unnest(v_adv, v_to) AS a(cid, id)
    WHERE cl.client_id = a.cid;
END
$$;
