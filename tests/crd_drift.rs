//! The committed CRD must be exactly what `helpdesk-mail-operator crd` prints.
//! Regenerate with: `cargo run -- crd > crds/helpdesktenants.mail.helpdesk.io.yaml`.

use std::process::Command;

#[test]
fn committed_crd_matches_the_types() {
    let output = Command::new(env!("CARGO_BIN_EXE_helpdesk-mail-operator"))
        .arg("crd")
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "crd failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).expect("CRD YAML is UTF-8");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/helpdesktenants.mail.helpdesk.io.yaml"
    );
    let committed = std::fs::read_to_string(path).expect("committed CRD is readable");
    assert!(
        printed == committed,
        "crds/helpdesktenants.mail.helpdesk.io.yaml is out of date; regenerate it with \
         `cargo run -- crd > crds/helpdesktenants.mail.helpdesk.io.yaml`"
    );
    assert!(
        !printed.contains(": []") && !printed.contains(": null"),
        "empty noise in the CRD"
    );
}
