//! The containers: they run `strut serve` with flags, variables, resources,
//! user and volumes that strut and the image have.

use super::workload::{Serve, Workload, workload, workloads};
use super::{flag_value, manifests, named};
use crate::container::Image;

const RESOURCE_NAMES: &[&str] = &["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"];

#[test]
fn containers_run_strut_serve_with_flags_and_variables_it_has() {
    let all = manifests();
    let image = Image::from_repo();
    let serve = Serve::new();
    for w in workloads(&all) {
        let argv = w.argv(&image);
        assert_eq!(
            argv[..2],
            image.entrypoint[..],
            "{}: runs `strut serve`",
            w.what
        );
        for arg in argv[2..].iter().filter(|a| a.starts_with("--")) {
            let flag = arg.split('=').next().unwrap();
            assert!(
                serve.has_flag(flag),
                "{}: `strut serve` has no {flag}",
                w.what
            );
        }
        // The image's variables and the container's, literal or not.
        let image_env = w.env(&image);
        let names = image_env
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(w.env_names());
        for name in names.filter(|k| k.starts_with("STRUT_")) {
            assert!(
                serve.reads_env(name),
                "{}: `strut serve` does not read {name}",
                w.what
            );
        }
        let port = w.port(&image);
        assert!(
            w.container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["containerPort"] == port),
            "{}: declares containerPort {port}",
            w.what
        );

        let resources = &w.container["resources"];
        for kind in ["requests", "limits"] {
            for name in resources[kind]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                assert!(
                    RESOURCE_NAMES.contains(&name.as_str()),
                    "{}: resource {name}",
                    w.what
                );
            }
        }
        assert!(
            resources["limits"]["nvidia.com/gpu"].is_string(),
            "{}: asks for a GPU",
            w.what
        );
        assert_eq!(
            resources["requests"]["nvidia.com/gpu"], resources["limits"]["nvidia.com/gpu"],
            "{}: a GPU request equals its limit (extended resources cannot be overcommitted)",
            w.what
        );

        // The image's user is numeric and non-root, so runAsNonRoot holds.
        assert_eq!(w.pod["securityContext"]["runAsNonRoot"], true, "{}", w.what);
        let uid: u64 = image.user.split(':').next().unwrap().parse().unwrap();
        if let Some(run_as) = w.pod["securityContext"]["runAsUser"].as_u64() {
            assert_eq!(run_as, uid, "{}: runs as the image's user", w.what);
        }

        // Secrets come from a Secret in deploy/, where strut looks for them.
        let secrets_dir = flag_value(&argv, "--secrets-dir")
            .or_else(|| w.env_var(&image, "STRUT_SECRETS_DIR"))
            .unwrap();
        let volume = w
            .mount(&secrets_dir)
            .unwrap_or_else(|| panic!("{}: {secrets_dir} mounted", w.what));
        let secret = volume["secret"]["secretName"]
            .as_str()
            .expect("a Secret volume");
        assert!(
            named(&all, "Secret", secret).is_some(),
            "{}: Secret {secret} in deploy/",
            w.what
        );
    }
}

#[test]
fn model_volumes_are_where_strut_serves_from() {
    let all = manifests();
    let image = Image::from_repo();
    let model_claim = |w: &Workload<'_>| {
        let model = w.model_path(&image);
        let volume = w
            .mount(&model)
            .unwrap_or_else(|| panic!("{}: the model directory is a mounted volume", w.what));
        let claim = volume["persistentVolumeClaim"]["claimName"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: a claim", w.what))
            .to_owned();
        assert!(
            named(&all, "PersistentVolumeClaim", &claim).is_some(),
            "{}: PVC {claim} in deploy/",
            w.what
        );
        claim
    };
    model_claim(&workload(&all, "Deployment strut-shared"));
    let claim = model_claim(&workload(&all, "Deployment strut"));

    // KServe's storage initializer fills /mnt/models from STORAGE_URI.
    let isvc = workload(&all, "InferenceService");
    assert_eq!(isvc.container["name"], "kserve-container");
    assert_eq!(isvc.model_path(&image), "/mnt/models");
    let uri = isvc.env_var(&image, "STORAGE_URI").expect("STORAGE_URI");
    assert!(uri.starts_with(&format!("pvc://{claim}/")), "{uri}");
}
