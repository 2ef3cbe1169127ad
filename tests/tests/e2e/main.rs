//! Every end-to-end test, in one binary (one link step, one place where the
//! shared fixtures start), a module per area. They run against the real
//! PostgreSQL, Cassandra and NATS that `make test` starts; the harness is the
//! `e2e` library (`tests/src`).

mod capctl_bench;
mod capctl_dlq;
mod capctl_fanout;
mod capctl_flash_sale;
mod capctl_token;
mod compose;
mod inventory_api;
mod inventory_auth;
mod inventory_concurrency;
mod inventory_expiry;
mod inventory_faults;
mod inventory_outage;
mod openapi_contract;
mod readiness;
mod service_kit;
mod timeline_api;
mod timeline_auth;
mod timeline_consistency;
mod timeline_fanout;
mod timeline_faults;
mod timeline_resilience;
