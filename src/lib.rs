//! helpdesk-mail-operator: keeps helpdesk tenants' mail deliverable by verifying that each
//! tenant's SPF record authorizes the provider's SMTP egress and that DMARC would accept it.
//!
//! The thinking lives in pure modules; the I/O stays at the edges. Arrows point down the
//! table: a module uses only those above it (docs/design.md §13).
//!
//! | module | role |
//! |---|---|
//! | [`names`] | email addresses and domain names: splitting, normalizing |
//! | [`dns`] | the one module that speaks to hickory: a small trait and the shared caching resolver |
//! | [`spf`] | RFC 7208: record parser, macro expander, `check_host()` with a trace, lints, the include edit |
//! | [`dmarc`] | DMARC policy discovery, tag-list parser, identifier alignment |
//! | [`dkim`] | RFC 6376 key records, selector lookup through CNAMEs, comparison with the provider's key |
//! | [`api`] | the `HelpdeskTenant` type: the only place the schema is defined |
//! | [`alignment`] | one sender against the provider: the facts, the verdict, the suggested record |
//! | [`egress`] | the provider's egress addresses, re-resolved from its SMTP hosts |
//! | [`guard`] | pure: the fleet guard's rate, threshold, hold and release |
//! | [`fleet_health`] | the provider self-check, the fallback sender check, the fleet guard's shared state |
//! | [`conditions`] | condition reasons, the conditions' summary, timestamp-insensitive comparison |
//! | [`mail_settings`] | the owned ConfigMap keys, derived from the recorded status |
//! | [`decide`] | pure: previous status + verdicts + now -> desired status, events, next check |
//! | [`schedule`] | when each tenant is due, retry counts, jitter and backoff |
//! | [`telemetry`] | logs, metrics, `/healthz`, `/readyz` |
//! | [`events`] | Kubernetes Events, one created per state change, none kept |
//! | [`reconcile`] | observe -> decide -> act for one tenant, and the error policy |
//! | [`leader`] | leader election on a Lease, with a renew deadline that fences writes |
//! | [`controller`] | watches, leader election, shutdown |
//! | [`cli`] | every command-line type, the one-shot commands and their renderers |

pub mod alignment;
pub mod api;
pub mod cli;
pub mod conditions;
pub mod config_maps;
pub mod controller;
pub mod decide;
pub mod dkim;
pub mod dmarc;
pub mod dns;
pub mod egress;
pub mod events;
pub mod fleet_health;
pub mod guard;
pub mod leader;
pub mod mail_settings;
pub mod names;
pub mod reconcile;
pub mod schedule;
pub mod spf;
pub mod telemetry;
