//! Agreement with truss over the real configs in shared/compat: what it accepts, what its
//! push-time strict check rejects, and the values it normalises.

mod common;

use serde_json::{Value, json};
use strut_config::{Severity, load, validate};

#[test]
fn agrees_with_truss_on_every_corpus_file() {
    let Some(cases) = common::corpus() else {
        return;
    };
    let hub = tempfile::tempdir().unwrap();
    let (mut lenient_ok, mut strict_total, mut strict_ok, mut norm_total, mut norm_ok) =
        (0, 0, 0, 0, 0);
    let mut disagreements = Vec::new();
    for case in &cases {
        let name = case.label["path"].as_str().unwrap();
        let truss_accepts = case.label["lenient"] == "ok";
        let loaded = load(&case.path);
        if loaded.is_ok() == truss_accepts {
            lenient_ok += 1;
        } else {
            let why = match &loaded {
                Err(e) => e.to_string(),
                Ok(_) => format!("accepted, truss said: {}", case.label["error"]),
            };
            disagreements.push(format!("lenient {name}: {why}"));
        }
        let (Ok(loaded), true) = (loaded, truss_accepts) else {
            continue;
        };

        strict_total += 1;
        let strict = validate(&loaded, &common::isolated_options(true, hub.path()));
        let strict_rejects = strict
            .diagnostics
            .iter()
            .any(|d| d.code == "unknown_key" && d.severity == Severity::Error);
        if strict_rejects == (case.label["strict"] == "error") {
            strict_ok += 1;
        } else {
            disagreements.push(format!(
                "strict {name}: we {}",
                if strict_rejects { "reject" } else { "accept" }
            ));
        }

        let report = validate(&loaded, &common::isolated_options(false, hub.path()));
        let n = &report.normalized;
        let ours = json!({
            "model_name": n.model_name, "python_version": n.python_version, "accelerator": n.accelerator,
            "use_gpu": n.use_gpu, "cpu": n.cpu, "memory": n.memory, "predict_concurrency": n.predict_concurrency,
            "has_example_input": n.has_example_input, "n_requirements": n.n_requirements,
        });
        let Value::Object(expected) = &case.label["norm"] else {
            panic!("{name}: no norm")
        };
        for (field, want) in expected {
            norm_total += 1;
            if &ours[field] == want {
                norm_ok += 1;
            } else {
                disagreements.push(format!(
                    "norm {name}: {field} = {} (truss: {want})",
                    ours[field]
                ));
            }
        }
    }
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    println!(
        "agreement with truss 0.18.35 over {} corpus files:",
        cases.len()
    );
    println!(
        "  accept/reject (lenient): {lenient_ok}/{} ({:.1}%)",
        cases.len(),
        pct(lenient_ok, cases.len())
    );
    println!(
        "  strict (push) check:     {strict_ok}/{strict_total} ({:.1}%)",
        pct(strict_ok, strict_total)
    );
    println!(
        "  normalised fields:       {norm_ok}/{norm_total} ({:.1}%)",
        pct(norm_ok, norm_total)
    );
    for d in &disagreements {
        println!("  DISAGREE {d}");
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements with truss",
        disagreements.len()
    );
    assert!(
        strict_total > 100 && norm_total > 900,
        "too few cases compared: {strict_total} strict, {norm_total} fields"
    );
}

#[test]
fn no_strut_error_on_configs_that_run_in_production() {
    // Every file truss accepts is deployed somewhere; a strut rule calling one of them an
    // error is a false positive. Warnings (unpinned requirements, …) are expected.
    let Some(cases) = common::corpus() else {
        return;
    };
    let hub = tempfile::tempdir().unwrap();
    let mut errors = Vec::new();
    let mut warnings = 0;
    for case in cases.iter().filter(|c| c.label["lenient"] == "ok") {
        let loaded = load(&case.path).expect("truss accepts it");
        let report = validate(&loaded, &common::isolated_options(false, hub.path()));
        warnings += report.warnings().count();
        errors.extend(
            report
                .errors()
                .map(|d| format!("{}: {d}", case.label["path"])),
        );
    }
    println!("{warnings} warnings over the accepted corpus; errors: {errors:#?}");
    assert!(errors.is_empty());
}
