-- Release (a claim given back through no fault of the job's: its sandbox died, its worker stopped) counts
-- no attempt; this counts the releases instead, so that past a bound a release is counted as an attempt
-- after all and a job that itself brings its sandbox down cannot go round forever. A constant default:
-- no table rewrite.
ALTER TABLE document_jobs
    ADD COLUMN release_count integer NOT NULL DEFAULT 0 CHECK (release_count >= 0);
