//! The database schema as versioned migrations, applied by the binary under a session advisory
//! lock (so that two nodes starting together do not both migrate), each in its own transaction
//! with its row in `vadyl_schema`. A database whose newest migration this binary does not know is
//! refused: an older binary must not write to a schema it does not understand.
//!
//! Append-only is enforced in the database twice: a trigger refuses UPDATE, DELETE and TRUNCATE on
//! the log and its tiles for everyone, the table owner included; and PUBLIC has no UPDATE/DELETE
//! there, so a node that connects as a role with only the grants of `docs/postgres.md` cannot even
//! disable the trigger.

/// Held while migrating (`pg_advisory_lock`); distinct from the log's append lock.
const MIGRATION_LOCK: i64 = 0x7661_6479_6c00_0000;

/// `(version, SQL)`, in order. Never edit a released migration: add the next one.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE FUNCTION vadyl_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the % table is append-only: % refused', TG_TABLE_NAME, TG_OP;
END $$;

CREATE TABLE events (
    position        bigint  PRIMARY KEY CHECK (position >= 1),
    event_id        text    NOT NULL UNIQUE,
    stream_id       text    NOT NULL,
    stream_version  bigint  NOT NULL CHECK (stream_version >= 1),
    type            text    NOT NULL,
    schema_version  integer NOT NULL CHECK (schema_version >= 1),
    recorded_at     text    NOT NULL,
    actor           text    NOT NULL,
    correlation_id  text,
    causation_id    text,
    payload         text    NOT NULL,
    prev_hash       bytea   NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea   NOT NULL CHECK (length(hash) = 32),
    UNIQUE (stream_id, stream_version)
);
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION vadyl_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION vadyl_refuse_change();

CREATE TABLE merkle_tiles (
    level integer NOT NULL CHECK (level >= 1),
    idx   bigint  NOT NULL CHECK (idx >= 0),
    hash  bytea   NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);
CREATE TRIGGER merkle_tiles_append_only BEFORE UPDATE OR DELETE ON merkle_tiles
    FOR EACH ROW EXECUTE FUNCTION vadyl_refuse_change();
CREATE TRIGGER merkle_tiles_no_truncate BEFORE TRUNCATE ON merkle_tiles
    FOR EACH STATEMENT EXECUTE FUNCTION vadyl_refuse_change();

CREATE TABLE token_hashes (id text PRIMARY KEY, sha256 bytea NOT NULL CHECK (length(sha256) = 32));

CREATE TABLE artifacts (
    hash  bytea PRIMARY KEY CHECK (length(hash) = 32),
    bytes bytea NOT NULL
);
CREATE TRIGGER artifacts_append_only BEFORE UPDATE OR DELETE ON artifacts
    FOR EACH ROW EXECUTE FUNCTION vadyl_refuse_change();

CREATE TABLE secrets (
    project       text    NOT NULL,
    name          text    NOT NULL,
    version       bigint  NOT NULL CHECK (version >= 1),
    nonce         bytea   NOT NULL,
    ciphertext    bytea   NOT NULL,
    fingerprint   text    NOT NULL,
    created_at_ms bigint  NOT NULL,
    PRIMARY KEY (project, name, version)
);
CREATE TRIGGER secrets_append_only BEFORE UPDATE OR DELETE ON secrets
    FOR EACH ROW EXECUTE FUNCTION vadyl_refuse_change();
CREATE TABLE secrets_meta (
    id        integer PRIMARY KEY CHECK (id = 1),
    key_check text    NOT NULL
);

REVOKE UPDATE, DELETE, TRUNCATE ON events, merkle_tiles, artifacts, secrets FROM PUBLIC;
"#,
    ),
    (
        2,
        r#"
-- Host memory (storage::postgres::memory). One row per (project, implementation), never deleted:
-- every write locks it first, which orders writes to one scope across nodes, and it carries the
-- counters that keep versions and fencing tokens from being reused.
CREATE TABLE memory_scopes (
    id              bigserial PRIMARY KEY,
    project         text   NOT NULL,
    implementation  text   NOT NULL,
    version_floor   bigint NOT NULL DEFAULT 0 CHECK (version_floor >= 0),
    entry_count     bigint NOT NULL DEFAULT 0 CHECK (entry_count >= 0),
    lease_tokens    bigint NOT NULL DEFAULT 0 CHECK (lease_tokens >= 0),
    UNIQUE (project, implementation)
);
CREATE TABLE memory_entries (
    scope_id    bigint NOT NULL REFERENCES memory_scopes (id),
    key         bytea  NOT NULL,
    value       bytea  NOT NULL,
    version     bigint NOT NULL CHECK (version >= 1),
    expires_at  bigint,
    PRIMARY KEY (scope_id, key)
);
CREATE INDEX memory_entries_expiry ON memory_entries (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE memory_journal (
    scope_id     bigint NOT NULL REFERENCES memory_scopes (id),
    journal      bytea  NOT NULL,
    sequence     bigint NOT NULL CHECK (sequence >= 1),
    data         bytea  NOT NULL,
    appended_at  bigint NOT NULL,
    PRIMARY KEY (scope_id, journal, sequence)
);
CREATE TABLE memory_leases (
    scope_id       bigint NOT NULL REFERENCES memory_scopes (id),
    name           bytea  NOT NULL,
    holder         text   NOT NULL,
    fencing_token  bigint NOT NULL CHECK (fencing_token >= 1),
    expires_at     bigint NOT NULL,
    PRIMARY KEY (scope_id, name)
);
CREATE INDEX memory_leases_expiry ON memory_leases (expires_at);

CREATE FUNCTION vadyl_memory_version_increases() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version <= OLD.version THEN RAISE EXCEPTION 'memory entry versions only increase'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER memory_entries_versions BEFORE UPDATE OF version ON memory_entries
    FOR EACH ROW EXECUTE FUNCTION vadyl_memory_version_increases();
CREATE FUNCTION vadyl_memory_token_increases() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.fencing_token < OLD.fencing_token THEN RAISE EXCEPTION 'fencing tokens only increase'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER memory_leases_tokens BEFORE UPDATE OF fencing_token ON memory_leases
    FOR EACH ROW EXECUTE FUNCTION vadyl_memory_token_increases();
CREATE FUNCTION vadyl_memory_counters_increase() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version_floor < OLD.version_floor OR NEW.lease_tokens < OLD.lease_tokens THEN
        RAISE EXCEPTION 'memory scope counters only increase';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER memory_scopes_counters BEFORE UPDATE ON memory_scopes
    FOR EACH ROW EXECUTE FUNCTION vadyl_memory_counters_increase();
CREATE TRIGGER memory_journal_append_only BEFORE UPDATE OR DELETE ON memory_journal
    FOR EACH ROW EXECUTE FUNCTION vadyl_refuse_change();
"#,
    ),
    (
        3,
        r#"
-- Invocation records (storage::postgres::invocations), indexed from each node's journal. `seq` is
-- the listing cursor: assigned under an advisory lock held to commit, so that cursors become
-- visible in increasing order and a reader paging by cursor never skips a record.
CREATE TABLE invocations (
    seq             bigserial PRIMARY KEY,
    id              text   NOT NULL UNIQUE,
    at_ms           bigint NOT NULL,
    project         text   NOT NULL,
    implementation  text   NOT NULL,
    operation       text   NOT NULL,
    record          text   NOT NULL
);
CREATE INDEX invocations_by_project ON invocations (project, seq);
CREATE TRIGGER invocations_append_only BEFORE UPDATE OR DELETE ON invocations
    FOR EACH ROW EXECUTE FUNCTION vadyl_refuse_change();
"#,
    ),
];

/// The newest schema this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("there is no event log in this database (it holds no Vadyl schema): start a node on it first")]
    Missing,
    #[error("the database's schema is at version {found}, older than this binary's {known}: start a node of this version on it to migrate it")]
    OlderThanBinary { found: i32, known: i32 },
    #[error("the database's schema is at version {found}, newer than this binary's {known}: run a vadyl at least as new as the one that migrated it")]
    NewerThanBinary { found: i32, known: i32 },
    #[error("cannot apply the database schema (migration {version})")]
    Migrate {
        version: i32,
        #[source]
        source: postgres::Error,
    },
    #[error("cannot read the database's schema version")]
    Read(#[source] postgres::Error),
}

/// Brings the database to [`latest`], or refuses it; returns the version it is at.
pub fn migrate(client: &mut postgres::Client) -> Result<i32, SchemaError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).map_err(SchemaError::Read)?;
    let result = migrate_locked(client);
    // The lock is a session lock: released here, or when the connection closes if this fails.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result
}

/// Checks, without changing anything, that the database is at exactly this binary's schema.
pub fn check(client: &mut postgres::Client) -> Result<i32, SchemaError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('vadyl_schema') IS NOT NULL", &[])
        .and_then(|r| r.try_get(0))
        .map_err(SchemaError::Read)?;
    if !exists {
        return Err(SchemaError::Missing);
    }
    let found: i32 = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM vadyl_schema", &[])
        .and_then(|r| r.try_get(0))
        .map_err(SchemaError::Read)?;
    match found.cmp(&latest()) {
        std::cmp::Ordering::Equal => Ok(found),
        std::cmp::Ordering::Greater => Err(SchemaError::NewerThanBinary { found, known: latest() }),
        std::cmp::Ordering::Less if found == 0 => Err(SchemaError::Missing),
        std::cmp::Ordering::Less => Err(SchemaError::OlderThanBinary { found, known: latest() }),
    }
}

fn migrate_locked(client: &mut postgres::Client) -> Result<i32, SchemaError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS vadyl_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .map_err(SchemaError::Read)?;
    let found: i32 = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM vadyl_schema", &[])
        .and_then(|r| r.try_get(0))
        .map_err(SchemaError::Read)?;
    if found > latest() {
        return Err(SchemaError::NewerThanBinary { found, known: latest() });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        let apply = |client: &mut postgres::Client| -> Result<(), postgres::Error> {
            let mut tx = client.transaction()?;
            tx.batch_execute(sql)?;
            tx.execute("INSERT INTO vadyl_schema (version) VALUES ($1)", &[version])?;
            tx.commit()
        };
        apply(client).map_err(|source| SchemaError::Migrate { version: *version, source })?;
        tracing::info!(version, "applied database migration");
    }
    Ok(latest())
}
