//! Edge cases of truss's parser: lax coercions, nulls, YAML 1.1 scalars, legacy keys,
//! cross-field rules, TRT-LLM validators. tests/golden/truss-0.18.35-verdicts.jsonl holds
//! each snippet with the verdict truss 0.18.35 gave it (`TrussConfig.from_yaml`, then
//! `validate_forbid_extra` for `strict`).

#[test]
fn accepts_and_rejects_exactly_what_truss_does() {
    let golden = include_str!("golden/truss-0.18.35-verdicts.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    let mut disagreements = Vec::new();
    let mut total = 0;
    for line in golden.lines() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let yaml = case["yaml"].as_str().unwrap();
        std::fs::write(&file, yaml).unwrap();
        let loaded = strut_config::load(&file);
        let lenient = if loaded.is_ok() { "ok" } else { "error" };
        let strict = loaded.as_ref().ok().map(|c| {
            if c.unknown_keys.is_empty() {
                "ok"
            } else {
                "error"
            }
        });
        total += 1;
        if lenient != case["lenient"] || strict != case["strict"].as_str() {
            let why = loaded.err().map(|e| e.to_string()).unwrap_or_default();
            disagreements.push(format!(
                "{yaml:?}: ours {lenient}/{strict:?}, truss {}/{} {why}",
                case["lenient"], case["strict"]
            ));
        }
    }
    println!(
        "{}/{total} snippets agree with truss",
        total - disagreements.len()
    );
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    assert!(total > 100);
}
