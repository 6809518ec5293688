-- PostgreSQL only (there, `jobs_integration` leaves running jobs out).
-- SQLite uses a partial index only when the query repeats its predicate
-- word for word, so here the index stays whole.
SELECT 1;
