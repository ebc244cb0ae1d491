-- strut's async queue, shared by every replica. JSON is kept as text, not
-- jsonb: jsonb reorders keys, and a model's input and output must come back
-- exactly as they were written.
CREATE TABLE strut_async_requests (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    protocol TEXT NOT NULL,
    target TEXT NOT NULL,
    deployment_id TEXT,
    input TEXT NOT NULL,
    webhook TEXT,
    events SMALLINT NOT NULL,
    priority SMALLINT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    max_attempts INTEGER NOT NULL,
    initial_delay_ms BIGINT NOT NULL,
    max_delay_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before_ms BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
    output TEXT,
    errors TEXT NOT NULL DEFAULT '[]',
    logs TEXT NOT NULL DEFAULT '[]',
    webhook_status TEXT NOT NULL,
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_next_ms BIGINT,
    webhook_error TEXT,
    -- The replica running it, until when, and whether a client cancelled it.
    owner TEXT,
    lease_until_ms BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX strut_async_queued_order ON strut_async_requests (priority, seq)
    WHERE status = 'QUEUED';
CREATE INDEX strut_async_queued_targets ON strut_async_requests (target)
    WHERE status = 'QUEUED';
-- Every replica expires what waited too long, twice a second.
CREATE INDEX strut_async_queued_expiry ON strut_async_requests (expires_ms)
    WHERE status = 'QUEUED';
CREATE INDEX strut_async_running_deployments ON strut_async_requests (deployment_id)
    WHERE status = 'IN_PROGRESS';
CREATE INDEX strut_async_running_leases ON strut_async_requests (lease_until_ms)
    WHERE status = 'IN_PROGRESS';
CREATE INDEX strut_async_webhooks_due ON strut_async_requests (webhook_next_ms)
    WHERE webhook_status = 'PENDING' AND finished_ms IS NOT NULL;
CREATE INDEX strut_async_finished ON strut_async_requests (finished_ms)
    WHERE finished_ms IS NOT NULL;
