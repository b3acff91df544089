-- Runs record the worker (host:pid:start:pidns) that runs them, so a run whose worker died is
-- told apart from one still running. Such a run is closed as failed by the next run, which
-- names itself in `abandoned_by` (it finishes the dead run's work); it is shown `abandoned`.
ALTER TABLE runs ADD COLUMN worker TEXT;
ALTER TABLE runs ADD COLUMN abandoned_by BIGINT;

-- Workers that claim work, each with the key of the advisory lock it holds on a session of
-- its own for its whole life: when the lock is gone from pg_locks, so is the worker, and its
-- claims are taken over at once.
CREATE TABLE workers (
    name            TEXT PRIMARY KEY,
    session         BIGINT NOT NULL,
    registered_at   TIMESTAMPTZ NOT NULL
);
