//! helpdesk-mail-operator: keeps helpdesk tenants' mail deliverable by verifying that each
//! tenant's SPF record authorizes the provider's SMTP egress and that DMARC would accept it.
//!
//! The thinking lives in pure modules; the I/O stays at the edges:
//!
//! | module | role |
//! |---|---|
//! | [`api`] | the `HelpdeskTenant` type: the only place the schema is defined |
//! | [`dns`] | the one module that speaks to hickory: a small trait and the shared caching resolver |
//! | [`spf`] | RFC 7208: record parser, macro expander, `check_host()` with a trace, lints |
//! | [`dmarc`] | DMARC policy discovery, tag-list parser, identifier alignment |
//! | [`dkim`] | RFC 6376 key records, selector lookup through CNAMEs, comparison with the provider's key |
//! | [`alignment`] | one sender against the provider: the verdict, the detail, the suggested record |
//! | [`decide`] | pure: previous status + verdicts + now -> desired status, mail settings, events |
//! | [`reconcile`] | observe -> decide -> act, and the error policy |
//! | [`controller`] | watches, leader election, shutdown |
//! | [`telemetry`] | logs, metrics, `/healthz`, `/readyz` |
//! | [`cli`] | the `spf check` and `check` commands, and the flags they share with `run` |

pub mod alignment;
pub mod api;
pub mod cli;
pub mod controller;
pub mod decide;
pub mod dkim;
pub mod dmarc;
pub mod dns;
pub mod reconcile;
pub mod spf;
pub mod telemetry;
