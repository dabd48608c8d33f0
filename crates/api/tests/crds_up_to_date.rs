//! The checked-in `crds/*.yaml` must equal what `crdgen` produces now.

use std::path::Path;

#[test]
fn checked_in_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    for (file, yaml) in llmroute_api::crds::rendered().expect("CRDs render") {
        let on_disk = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(on_disk == yaml, "crds/{file} is stale: run `make crds` and commit the result");
    }
}

#[test]
fn printer_columns_select_conditions_by_type() {
    let rendered = llmroute_api::crds::rendered().expect("CRDs render");
    for (file, yaml) in rendered.into_iter().filter(|(file, _)| *file != "routingconfigs.yaml") {
        assert!(yaml.contains(r#".status.conditions[?(@.type=="Accepted")].status"#), "{file}");
        assert!(!yaml.contains(".status.conditions[0]"), "{file}");
    }
}
