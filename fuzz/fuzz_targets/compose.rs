//! A repository's compose file, imported as the server imports it: read from a checkout,
//! interpolated, routed, checked by the policy, and turned into the runtime file. None of it
//! may panic, and the runtime file must hold no `$` that compose would interpolate again.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rustploy_actors::deploy::{compose, detect, finalize, policy};

/// One checkout for the whole run: the input is written to its compose file each time.
fn checkout() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rustploy-fuzz-compose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch checkout");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let root = checkout();
    if std::fs::write(root.join("compose.yaml"), data).is_err() {
        return;
    }
    let Ok(detection) = detect::detect(root, None) else {
        return;
    };
    let env = BTreeMap::from([("GREETING".to_string(), "$HOME and ${PATH}".to_string())]);
    let Ok(loaded) = rustploy_actors::deploy::checkout::load_compose(root, "compose.yaml", &env)
    else {
        return;
    };
    let scope = "rp-fuzz".to_string();
    let check = policy::Checkout::new(root, Some("compose.yaml"), &scope);
    let _ = policy::check(loaded.file.document(), &check);
    let spec = compose::RuntimeSpec {
        app_scope: scope.clone(),
        app: "fuzz".into(),
        deployment: 1,
        network: "rp-ingress".into(),
        routed_service: detection.routed_service.clone(),
        env,
        profiles: Vec::new(),
        private: None,
    };
    if let Ok((doc, _)) = compose::runtime(&loaded.file, &spec) {
        let doc = finalize::finalize(doc, root);
        assert_escaped(&doc);
    }
});

/// Every '$' in a value is escaped ('$$'), so compose interpolates nothing (keys are never
/// interpolated).
fn assert_escaped(v: &serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            assert!(!s.replace("$$", "").contains('$'), "an unescaped '$' in the runtime file");
        }
        serde_json::Value::Array(a) => a.iter().for_each(assert_escaped),
        serde_json::Value::Object(o) => o.values().for_each(assert_escaped),
        _ => {}
    }
}
