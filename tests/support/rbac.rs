//! The operator's RBAC rules, read from the one list the chart renders them from
//! (`charts/helpdesk-mail-operator/files/rbac-rules.yaml`).

use std::path::Path;

use k8s_openapi::api::rbac::v1::PolicyRule;

/// The rules file, relative to the repository root.
pub const RULES_FILE: &str = "charts/helpdesk-mail-operator/files/rbac-rules.yaml";

/// What the operator needs: on tenants and their ConfigMaps, and on its Lease.
#[derive(Debug, serde::Deserialize)]
pub struct OperatorRules {
    pub tenants: Vec<PolicyRule>,
    pub lease: Vec<PolicyRule>,
}

/// The rules, with the Lease's name filled in.
pub fn operator_rules(lease_name: &str) -> OperatorRules {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(RULES_FILE);
    let text = std::fs::read_to_string(&path).expect("the RBAC rules file is readable");
    serde_saphyr::from_str(&text.replace("LEASE_NAME", lease_name))
        .expect("the RBAC rules file parses")
}
