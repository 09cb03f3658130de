-- openclaw-scheduler (Python) storage schema.
-- Column-for-column compatible with the Node.js reference's schema version 23, so an existing
-- scheduler.db opens in place and both implementations can read each other's rows.
-- Every statement is idempotent. Our own additions (columns the reference does not have) come
-- last in their table, each marked "ours", so an existing reference DB gains them by ALTER TABLE.
-- Timestamps are UTC text 'YYYY-MM-DD HH:MM:SS'; booleans are INTEGER 0/1; JSON is TEXT.

CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  enabled INTEGER NOT NULL DEFAULT 1,
  schedule_kind TEXT NOT NULL DEFAULT 'cron',
  schedule_at TEXT DEFAULT NULL,
  schedule_cron TEXT,
  schedule_tz TEXT NOT NULL DEFAULT 'UTC',
  session_target TEXT NOT NULL DEFAULT 'isolated',
  agent_id TEXT DEFAULT 'main',
  payload_kind TEXT NOT NULL,
  payload_message TEXT NOT NULL,
  payload_model TEXT,
  payload_thinking TEXT,
  payload_timeout_seconds INTEGER DEFAULT 120,
  execution_intent TEXT NOT NULL DEFAULT 'execute',
  execution_read_only INTEGER NOT NULL DEFAULT 0,
  overlap_policy TEXT NOT NULL DEFAULT 'skip',
  run_timeout_ms INTEGER NOT NULL DEFAULT 300000,
  max_queued_dispatches INTEGER NOT NULL DEFAULT 25,
  max_pending_approvals INTEGER NOT NULL DEFAULT 10,
  max_trigger_fanout INTEGER NOT NULL DEFAULT 25,
  delivery_mode TEXT DEFAULT 'announce',
  delivery_channel TEXT,
  delivery_to TEXT,
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  updated_at TEXT NOT NULL DEFAULT (datetime('now')),
  delete_after_run INTEGER NOT NULL DEFAULT 0,
  ttl_hours INTEGER DEFAULT NULL,
  parent_id TEXT,
  trigger_on TEXT,
  trigger_delay_s INTEGER DEFAULT 0,
  trigger_condition TEXT DEFAULT NULL,
  max_retries INTEGER DEFAULT 0,
  queued_count INTEGER DEFAULT 0,
  payload_scope TEXT NOT NULL DEFAULT 'own',
  resource_pool TEXT DEFAULT NULL,
  delivery_guarantee TEXT DEFAULT 'at-most-once',
  job_class TEXT DEFAULT 'standard',
  approval_required INTEGER DEFAULT 0,
  approval_timeout_s INTEGER DEFAULT 3600,
  approval_auto TEXT DEFAULT 'reject',
  context_retrieval TEXT DEFAULT 'none',
  context_retrieval_limit INTEGER DEFAULT 5,
  output_store_limit_bytes INTEGER NOT NULL DEFAULT 65536,
  output_excerpt_limit_bytes INTEGER NOT NULL DEFAULT 65536,
  output_summary_limit_bytes INTEGER NOT NULL DEFAULT 65536,
  output_offload_threshold_bytes INTEGER NOT NULL DEFAULT 65536,
  preferred_session_key TEXT DEFAULT NULL,
  auth_profile TEXT DEFAULT NULL,
  delivery_opt_out_reason TEXT DEFAULT NULL,
  origin TEXT DEFAULT NULL,
  identity_principal TEXT DEFAULT NULL,
  identity_run_as TEXT DEFAULT NULL,
  identity_attestation TEXT DEFAULT NULL,
  identity_ref TEXT DEFAULT NULL,
  identity_subject_kind TEXT DEFAULT NULL,
  identity_subject_principal TEXT DEFAULT NULL,
  identity_trust_level TEXT DEFAULT NULL,
  identity_delegation_mode TEXT DEFAULT NULL,
  identity TEXT DEFAULT NULL,
  authorization_proof_ref TEXT DEFAULT NULL,
  authorization_proof TEXT DEFAULT NULL,
  authorization_ref TEXT DEFAULT NULL,
  authorization TEXT DEFAULT NULL,
  evidence_ref TEXT DEFAULT NULL,
  evidence TEXT DEFAULT NULL,
  contract_required_trust_level TEXT DEFAULT NULL,
  contract_trust_enforcement TEXT DEFAULT NULL,
  contract_sandbox TEXT DEFAULT NULL,
  contract_allowed_paths TEXT DEFAULT NULL,
  contract_network TEXT DEFAULT NULL,
  contract_max_cost_usd REAL DEFAULT NULL,
  contract_audit TEXT DEFAULT NULL,
  child_credential_policy TEXT DEFAULT NULL,
  job_type TEXT NOT NULL DEFAULT 'standard',
  placement TEXT DEFAULT NULL, -- ours: where it may run across a fleet, 'host:<name>' | 'label:<label>' | NULL (any instance)
  watchdog_target_label TEXT,
  watchdog_check_cmd TEXT,
  watchdog_timeout_min INTEGER,
  watchdog_alert_channel TEXT,
  watchdog_alert_target TEXT,
  watchdog_self_destruct INTEGER NOT NULL DEFAULT 1,
  watchdog_started_at TEXT,
  next_run_at TEXT,
  last_run_at TEXT,
  last_status TEXT,
  consecutive_errors INTEGER NOT NULL DEFAULT 0,
  misfire_grace_s INTEGER DEFAULT NULL, -- ours: skip an occurrence missed by more than this
  CHECK (
    delivery_mode NOT IN ('announce', 'announce-always')
    OR (delivery_to IS NOT NULL AND delivery_to != '')
  )
);
CREATE INDEX IF NOT EXISTS idx_jobs_next_run ON jobs(next_run_at) WHERE enabled = 1;
CREATE INDEX IF NOT EXISTS idx_jobs_parent ON jobs(parent_id) WHERE parent_id IS NOT NULL;
-- ours: the pooled jobs, which the scheduling loop looks at apart from the others
CREATE INDEX IF NOT EXISTS idx_jobs_pool ON jobs(resource_pool) WHERE resource_pool IS NOT NULL;

CREATE TABLE IF NOT EXISTS job_dispatch_queue (
  id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  dispatch_kind TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  scheduled_for TEXT NOT NULL,
  source_run_id TEXT REFERENCES runs(id) ON DELETE SET NULL,
  retry_of_run_id TEXT REFERENCES runs(id) ON DELETE SET NULL,
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  claimed_at TEXT,
  processed_at TEXT
);
CREATE INDEX IF NOT EXISTS idx_dispatch_queue_due ON job_dispatch_queue(status, scheduled_for);
CREATE INDEX IF NOT EXISTS idx_dispatch_queue_job ON job_dispatch_queue(job_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_dispatch_queue_source_run ON job_dispatch_queue(source_run_id)
  WHERE source_run_id IS NOT NULL;
-- ours: deleting a run looks up the rows that name it (ON DELETE SET NULL); without these
-- indexes each pruned run scanned the whole table (minutes for an hour's prune of 100k messages).
CREATE INDEX IF NOT EXISTS idx_dispatch_queue_retry_run ON job_dispatch_queue(retry_of_run_id)
  WHERE retry_of_run_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  status TEXT NOT NULL DEFAULT 'pending',
  started_at TEXT NOT NULL DEFAULT (datetime('now')),
  finished_at TEXT,
  duration_ms INTEGER,
  last_heartbeat TEXT NOT NULL DEFAULT (datetime('now')),
  session_key TEXT,
  session_id TEXT,
  summary TEXT,
  error_message TEXT,
  shell_exit_code INTEGER,
  shell_signal TEXT,
  shell_timed_out INTEGER NOT NULL DEFAULT 0,
  shell_stdout TEXT,
  shell_stderr TEXT,
  shell_stdout_path TEXT,
  shell_stderr_path TEXT,
  shell_stdout_bytes INTEGER NOT NULL DEFAULT 0,
  shell_stderr_bytes INTEGER NOT NULL DEFAULT 0,
  dispatched_at TEXT,
  run_timeout_ms INTEGER NOT NULL DEFAULT 300000,
  retry_count INTEGER DEFAULT 0,
  retry_of TEXT,
  triggered_by_run TEXT,
  dispatch_queue_id TEXT REFERENCES job_dispatch_queue(id) ON DELETE SET NULL,
  context_summary TEXT,
  replay_of TEXT,
  idempotency_key TEXT,
  identity_resolved TEXT DEFAULT NULL,
  trust_evaluation TEXT DEFAULT NULL,
  authorization_decision TEXT DEFAULT NULL,
  authorization_proof_verification TEXT DEFAULT NULL,
  evidence_record TEXT DEFAULT NULL,
  credential_handoff_summary TEXT DEFAULT NULL,
  owner TEXT DEFAULT NULL, -- ours: the daemon instance running it, '<instance id>@<host>'
  cost_usd REAL DEFAULT NULL, -- ours: what the gateway reported the agent turn cost (USD), when it did
  lease_expires_at TEXT DEFAULT NULL, -- ours: the owner holds the run until then (heartbeats extend it)
  lease_generation INTEGER NOT NULL DEFAULT 1 -- ours: bumped when another instance takes the run over (fencing)
);
CREATE INDEX IF NOT EXISTS idx_runs_job_id ON runs(job_id);
CREATE INDEX IF NOT EXISTS idx_runs_status ON runs(status) WHERE status = 'running';
-- ours: a job's running runs, for the overlap and resource pool checks of every claim
CREATE INDEX IF NOT EXISTS idx_runs_running_job ON runs(job_id) WHERE status = 'running';
CREATE UNIQUE INDEX IF NOT EXISTS idx_runs_idempotency ON runs(idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_runs_dispatch_queue ON runs(dispatch_queue_id)
  WHERE dispatch_queue_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY,
  from_agent TEXT NOT NULL,
  to_agent TEXT NOT NULL,
  team_id TEXT,
  member_id TEXT,
  task_id TEXT,
  reply_to TEXT REFERENCES messages(id) ON DELETE SET NULL,
  kind TEXT NOT NULL DEFAULT 'text',
  subject TEXT,
  body TEXT NOT NULL,
  metadata TEXT,
  priority INTEGER NOT NULL DEFAULT 0,
  channel TEXT,
  delivery_to TEXT,
  status TEXT NOT NULL DEFAULT 'pending',
  delivered_at TEXT,
  read_at TEXT,
  ack_required INTEGER NOT NULL DEFAULT 0,
  ack_at TEXT,
  delivery_attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  team_mapped_at TEXT,
  expires_at TEXT,
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  job_id TEXT REFERENCES jobs(id) ON DELETE SET NULL,
  run_id TEXT REFERENCES runs(id) ON DELETE SET NULL,
  owner TEXT,
  next_attempt_at TEXT DEFAULT NULL -- ours: when an outbound delivery is next tried
);
CREATE INDEX IF NOT EXISTS idx_messages_to ON messages(to_agent, status);
CREATE INDEX IF NOT EXISTS idx_messages_from ON messages(from_agent);
CREATE INDEX IF NOT EXISTS idx_messages_created ON messages(created_at);
-- ours: see idx_dispatch_queue_retry_run (a pruned run's messages keep their row, lose the link)
CREATE INDEX IF NOT EXISTS idx_messages_run ON messages(run_id) WHERE run_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_messages_pending ON messages(to_agent, status, priority DESC)
  WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_messages_team ON messages(team_id, member_id, status)
  WHERE team_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_messages_task ON messages(team_id, task_id, created_at)
  WHERE team_id IS NOT NULL AND task_id IS NOT NULL;
-- ours: the team messages the team adapter has still to map (it looks every delivery check)
CREATE INDEX IF NOT EXISTS idx_messages_team_unmapped ON messages(created_at)
  WHERE team_id IS NOT NULL AND team_mapped_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_messages_outbound ON messages(next_attempt_at)
  WHERE to_agent = '@outbound' AND status = 'pending';
CREATE INDEX IF NOT EXISTS idx_messages_ack_pending ON messages(ack_required, ack_at, status)
  WHERE ack_required = 1 AND ack_at IS NULL;
-- ours: the spawn messages the daemon has still to answer (it looks after every CLI write)
CREATE INDEX IF NOT EXISTS idx_messages_spawn_pending ON messages(created_at)
  WHERE kind = 'spawn' AND status = 'pending';

CREATE TABLE IF NOT EXISTS agents (
  id TEXT PRIMARY KEY,
  name TEXT,
  status TEXT NOT NULL DEFAULT 'idle',
  last_seen_at TEXT,
  session_key TEXT,
  capabilities TEXT,
  delivery_channel TEXT,
  delivery_to TEXT,
  brand_name TEXT,
  created_at TEXT NOT NULL DEFAULT (datetime('now'))
);

CREATE TABLE IF NOT EXISTS delivery_aliases (
  alias TEXT PRIMARY KEY,
  channel TEXT NOT NULL,
  target TEXT NOT NULL,
  description TEXT,
  created_at TEXT DEFAULT (datetime('now'))
);

CREATE TABLE IF NOT EXISTS approvals (
  id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  run_id TEXT REFERENCES runs(id) ON DELETE SET NULL,
  dispatch_queue_id TEXT REFERENCES job_dispatch_queue(id) ON DELETE SET NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  requested_at TEXT NOT NULL DEFAULT (datetime('now')),
  resolved_at TEXT,
  resolved_by TEXT,
  notes TEXT
);
CREATE INDEX IF NOT EXISTS idx_approvals_status ON approvals(status) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_approvals_job ON approvals(job_id);
-- ours: see idx_dispatch_queue_retry_run
CREATE INDEX IF NOT EXISTS idx_approvals_run ON approvals(run_id) WHERE run_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_approvals_dispatch_queue ON approvals(dispatch_queue_id)
  WHERE dispatch_queue_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS idempotency_ledger (
  key TEXT PRIMARY KEY,
  job_id TEXT NOT NULL,
  run_id TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'claimed',
  claimed_at TEXT NOT NULL DEFAULT (datetime('now')),
  released_at TEXT,
  result_hash TEXT,
  expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_idem_expires ON idempotency_ledger(expires_at);
CREATE INDEX IF NOT EXISTS idx_idem_job ON idempotency_ledger(job_id);

CREATE TABLE IF NOT EXISTS task_tracker (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  created_by TEXT NOT NULL DEFAULT 'main',
  expected_agents TEXT NOT NULL,
  timeout_s INTEGER NOT NULL DEFAULT 600,
  status TEXT NOT NULL DEFAULT 'active',
  completed_at TEXT,
  delivery_channel TEXT,
  delivery_to TEXT,
  summary TEXT
);
CREATE INDEX IF NOT EXISTS idx_task_tracker_status ON task_tracker(status) WHERE status = 'active';

CREATE TABLE IF NOT EXISTS task_tracker_agents (
  id TEXT PRIMARY KEY,
  tracker_id TEXT NOT NULL REFERENCES task_tracker(id) ON DELETE CASCADE,
  agent_label TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  started_at TEXT,
  finished_at TEXT,
  exit_message TEXT,
  error TEXT,
  session_key TEXT,
  last_heartbeat TEXT
);
CREATE INDEX IF NOT EXISTS idx_tta_tracker ON task_tracker_agents(tracker_id);
CREATE INDEX IF NOT EXISTS idx_tta_status ON task_tracker_agents(status)
  WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS idx_tta_session_key ON task_tracker_agents(session_key)
  WHERE session_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS message_receipts (
  id TEXT PRIMARY KEY,
  message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
  event_type TEXT NOT NULL,
  attempt INTEGER,
  actor TEXT,
  detail TEXT,
  created_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS idx_receipts_message ON message_receipts(message_id, created_at DESC);

-- ours: each agent's own state of a broadcast message (reference defect §17 #15: one agent
-- reading a broadcast consumed it for every agent). No row: the broadcast is still pending for
-- that agent. The broadcast's own row keeps status pending until it expires or is pruned.
CREATE TABLE IF NOT EXISTS message_recipients (
  message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
  agent_id TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  delivered_at TEXT,
  read_at TEXT,
  ack_at TEXT,
  PRIMARY KEY (message_id, agent_id)
);
CREATE INDEX IF NOT EXISTS idx_message_recipients_agent ON message_recipients(agent_id, status);

CREATE TABLE IF NOT EXISTS team_tasks (
  team_id TEXT NOT NULL,
  id TEXT NOT NULL,
  member_id TEXT,
  source_message_id TEXT REFERENCES messages(id) ON DELETE SET NULL,
  title TEXT,
  status TEXT NOT NULL DEFAULT 'open',
  gate_tracker_id TEXT REFERENCES task_tracker(id) ON DELETE SET NULL,
  gate_status TEXT,
  last_error TEXT,
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  updated_at TEXT NOT NULL DEFAULT (datetime('now')),
  completed_at TEXT,
  PRIMARY KEY (team_id, id)
);
CREATE INDEX IF NOT EXISTS idx_team_tasks_status ON team_tasks(team_id, status, updated_at DESC);
CREATE INDEX IF NOT EXISTS idx_team_tasks_gate ON team_tasks(gate_tracker_id)
  WHERE gate_tracker_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS team_mailbox_events (
  id TEXT PRIMARY KEY,
  team_id TEXT NOT NULL,
  member_id TEXT,
  task_id TEXT,
  message_id TEXT REFERENCES messages(id) ON DELETE SET NULL,
  event_type TEXT NOT NULL,
  payload TEXT,
  created_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS idx_team_events_team ON team_mailbox_events(team_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_team_events_task ON team_mailbox_events(team_id, task_id, created_at DESC)
  WHERE task_id IS NOT NULL;

-- ours: a resource pool's capacity (concurrent running runs across the jobs that name it).
-- A pool without a row has capacity 1, the reference's fixed rule.
CREATE TABLE IF NOT EXISTS resource_pools (
  name TEXT PRIMARY KEY,
  capacity INTEGER NOT NULL DEFAULT 1 CHECK (capacity >= 1),
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  updated_at TEXT NOT NULL DEFAULT (datetime('now'))
);

-- ours: the sub-agent dispatch ledger (features.md §15.1), one row per label. The reference kept
-- it in a labels.json beside its dispatch script; `dispatch import` reads such a file once.
CREATE TABLE IF NOT EXISTS dispatch_labels (
  label TEXT PRIMARY KEY,
  session_key TEXT NOT NULL,
  gateway_run_id TEXT,
  agent_id TEXT NOT NULL DEFAULT 'main',
  mode TEXT NOT NULL DEFAULT 'fresh',
  model TEXT,
  thinking TEXT,
  origin TEXT,
  deliver_to TEXT,
  deliver_channel TEXT,
  delivery_mode TEXT,
  verify_cmd TEXT,
  status TEXT NOT NULL DEFAULT 'running',
  summary TEXT,
  error TEXT,
  completion TEXT,
  task_prompt TEXT,
  timeout_s INTEGER NOT NULL DEFAULT 300,
  idle_threshold_s INTEGER NOT NULL DEFAULT 300,
  watcher_job_id TEXT,
  watchdog_job_id TEXT,
  sha TEXT,
  retry_count INTEGER NOT NULL DEFAULT 0,
  restart_retry_count INTEGER NOT NULL DEFAULT 0,
  steered_at TEXT,
  alerted_at TEXT,
  last_ping TEXT,
  last_activity_at TEXT,
  activity_tokens INTEGER,
  spawned_at TEXT NOT NULL DEFAULT (datetime('now')),
  finished_at TEXT,
  extra TEXT,
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  updated_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS idx_dispatch_labels_status ON dispatch_labels(status, spawned_at DESC);
CREATE INDEX IF NOT EXISTS idx_dispatch_labels_session ON dispatch_labels(session_key);

-- ours (issue 12): the daemons that serve this database, one row per daemon start. Each instance
-- writes only its own row: at start, on its heartbeat (last_seen) and at a clean stop.
CREATE TABLE IF NOT EXISTS instances (
  id TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  labels TEXT NOT NULL DEFAULT '[]', -- JSON array of the instance's labels
  version TEXT,
  pid INTEGER,
  started_at TEXT NOT NULL,
  last_seen TEXT NOT NULL,
  stopped_at TEXT
);
CREATE INDEX IF NOT EXISTS idx_instances_host ON instances(host);

CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  applied_at TEXT NOT NULL DEFAULT (datetime('now'))
);
