-- Runs record the worker (host:pid:start:pidns) that runs them, so a run whose worker died is
-- told apart from one still running. Such a run is closed as failed by the next run, which
-- names itself in `abandoned_by` (it finishes the dead run's work); it is shown `abandoned`.
ALTER TABLE runs ADD COLUMN worker TEXT;
ALTER TABLE runs ADD COLUMN abandoned_by INTEGER;
