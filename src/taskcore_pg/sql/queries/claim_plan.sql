-- Run once when a claim session opens (Settings.plan_guard; the backend keeps the
-- sessions that claim apart from the others, so these settings reach nothing else).
-- PostgreSQL plans the claim afresh on every call otherwise: its generic plan (the
-- unknown LIMIT counted as a tenth of the table) looks dearer than the custom ones,
-- and the planning was a third of the server's time per claim (0.56 ms). Generic,
-- planned once per session, and pinned to the shape the custom plans have anyway: the
-- partial indexes read in order, nested loops, the leased rows found by their ctid.
-- Without the pins the generic plan hash-joins a sequential scan of the whole table
-- (236 ms with 200,000 rows), and a plan that big would be JIT-compiled. The settle
-- statements a claim carries run under them too (nested loops over the primary key).
SELECT set_config('plan_cache_mode', 'force_generic_plan', false),
       set_config('enable_seqscan', 'off', false),
       set_config('enable_hashjoin', 'off', false),
       set_config('enable_mergejoin', 'off', false),
       set_config('jit', 'off', false)
