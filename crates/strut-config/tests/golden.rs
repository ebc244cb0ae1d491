//! `to_json` equals truss's `to_dict(verbose=True)`, the `config` a model receives.
//! tests/golden/truss-0.18.35-to_dict.jsonl was produced by truss 0.18.35 itself
//! (`TrussConfig.from_yaml(path).to_dict(verbose=True)`) for a spread of corpus files:
//! plain, TRT-LLM v1 and v2, a speculator, a docker server, a model cache, an encoder.

mod common;

#[test]
fn to_json_matches_truss_to_dict() {
    let Some(cases) = common::corpus() else {
        return;
    };
    let golden = include_str!("golden/truss-0.18.35-to_dict.jsonl");
    let mut compared = 0;
    for line in golden.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let path = entry["path"].as_str().unwrap();
        let case = cases
            .iter()
            .find(|c| c.label["path"] == path)
            .expect("golden file is in the corpus");
        let ours = strut_config::load(&case.path).unwrap().to_json();
        assert_eq!(ours, entry["dict"], "{path}");
        compared += 1;
    }
    assert!(compared >= 8, "only {compared} golden dicts");
}
