-- Issue 20: every change of a person's record-sharing consent is an audit row of its own,
-- written in the Consent's own transaction (it cannot be lost in a queue): `kind` 'consent'
-- (request rows are 'rest'), and `policy` the authority it was recorded on (the person, their
-- proxy, a role the operator authorised, or a feed), rendered as AuditEvent.agent.policy.
ALTER TABLE audit_event ADD COLUMN kind text NOT NULL DEFAULT 'rest';
ALTER TABLE audit_event ADD COLUMN policy text;
