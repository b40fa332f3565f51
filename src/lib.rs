//! helpdesk-mail-operator: keeps helpdesk tenants' mail deliverable by verifying that each
//! tenant's SPF record authorizes the provider's SMTP egress and that DMARC would accept it.

pub mod alignment;
pub mod api;
pub mod cli;
pub mod controller;
pub mod decide;
pub mod dmarc;
pub mod dns;
pub mod reconcile;
pub mod spf;
pub mod telemetry;
