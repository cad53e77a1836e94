//! Compose's merge rules, for override files (`compose.override.yaml` beside the chosen file)
//! and `extends`: pure functions over parsed documents.
//!
//! Mappings merge key by key; `ports`, `expose`, `dns`, `dns_search`, `tmpfs`, `cap_add`,
//! `cap_drop` and `external_links` are appended (without repeats); `environment`, `labels`,
//! `extra_hosts`, `sysctls`, `depends_on` and `networks` merge by key whatever their form;
//! `volumes`, `devices`, `secrets` and `configs` merge by their target; `command`,
//! `entrypoint` and every other value are replaced by the later file's.

use serde_json::{Map, Value};

/// Lists compose appends.
const APPENDED: &[&str] = &[
    "ports",
    "expose",
    "dns",
    "dns_search",
    "tmpfs",
    "cap_add",
    "cap_drop",
    "external_links",
];

/// Lists or mappings compose merges by key.
const KEYED: &[(&str, char)] = &[
    ("environment", '='),
    ("labels", '='),
    ("extra_hosts", ':'),
    ("sysctls", '='),
];

/// Lists compose merges by each entry's target.
const BY_TARGET: &[&str] = &["volumes", "devices", "secrets", "configs"];

/// Override file names tried beside a compose file with one of compose's default names.
pub fn override_names(file_name: &str) -> Vec<String> {
    let Some((stem, _)) = file_name.rsplit_once('.') else {
        return Vec::new();
    };
    if !matches!(stem, "compose" | "docker-compose") {
        return Vec::new();
    }
    vec![
        format!("{stem}.override.yaml"),
        format!("{stem}.override.yml"),
    ]
}

/// Merges a whole override document into `base`: services one by one, the top-level
/// `volumes`/`networks`/`secrets`/`configs` key by key, anything else replaced.
pub fn merge_documents(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (key.as_str(), base.get_mut(&key)) {
            ("services", Some(Value::Object(services))) => {
                let Value::Object(over_services) = value else {
                    base.insert(key, value);
                    continue;
                };
                for (name, service) in over_services {
                    match services.get_mut(&name) {
                        Some(existing) => merge_service(existing, service),
                        None => {
                            services.insert(name, service);
                        }
                    }
                }
            }
            ("volumes" | "networks" | "secrets" | "configs", Some(Value::Object(m))) => {
                if let Value::Object(over) = value {
                    for (k, v) in over {
                        match m.get_mut(&k) {
                            Some(existing) => merge_value(existing, v),
                            None => {
                                m.insert(k, v);
                            }
                        }
                    }
                }
            }
            _ => {
                base.insert(key, value);
            }
        }
    }
}

/// Merges service definition `over` into `base`, as compose does for overrides and `extends`.
pub fn merge_service(base: &mut Value, over: Value) {
    let (Value::Object(b), Value::Object(o)) = (&mut *base, &over) else {
        *base = over;
        return;
    };
    for (key, value) in o.clone() {
        let merged = match b.remove(&key) {
            None => value,
            Some(old) => merge_field(&key, old, value),
        };
        b.insert(key, merged);
    }
}

fn merge_field(key: &str, old: Value, new: Value) -> Value {
    if APPENDED.contains(&key) {
        let mut list = as_list(old);
        for item in as_list(new) {
            if !list.contains(&item) {
                list.push(item);
            }
        }
        return Value::Array(list);
    }
    if let Some((_, sep)) = KEYED.iter().find(|(k, _)| *k == key) {
        let mut m = keyed(old, *sep);
        m.extend(keyed(new, *sep));
        return Value::Object(m);
    }
    if matches!(key, "depends_on" | "networks") {
        let mut m = names_map(old);
        for (k, v) in names_map(new) {
            match m.get_mut(&k) {
                Some(existing) => merge_value(existing, v),
                None => {
                    m.insert(k, v);
                }
            }
        }
        return Value::Object(m);
    }
    if BY_TARGET.contains(&key) {
        let mut list = as_list(old);
        for item in as_list(new) {
            let target = mount_target(key, &item);
            match list
                .iter_mut()
                .find(|i| target.is_some() && mount_target(key, i) == target)
            {
                Some(slot) => *slot = item,
                None => list.push(item),
            }
        }
        return Value::Array(list);
    }
    if matches!(key, "command" | "entrypoint") {
        return new;
    }
    let mut old = old;
    merge_value(&mut old, new);
    old
}

/// Mappings merge recursively; anything else is replaced.
fn merge_value(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge_value(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, over) => *slot = over,
    }
}

fn as_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// `["K=V", "K"]` or `{K: V}` as a mapping.
fn keyed(v: Value, sep: char) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        Value::Array(items) => items
            .into_iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(match s.split_once(sep) {
                    Some((k, v)) => (k.trim().to_string(), Value::String(v.to_string())),
                    None => (s, Value::Null),
                }),
                _ => None,
            })
            .collect(),
        _ => Map::new(),
    }
}

/// `[a, b]` or `{a: {...}}` as a mapping.
fn names_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        Value::Array(items) => items
            .into_iter()
            .filter_map(|i| i.as_str().map(|s| (s.to_string(), Value::Null)))
            .collect(),
        _ => Map::new(),
    }
}

/// The target of a mount-like entry: `./data:/var/lib/x:ro` is `/var/lib/x`; a secret or
/// config is keyed by its target, else its source.
fn mount_target(key: &str, item: &Value) -> Option<String> {
    match item {
        Value::String(s) if key == "secrets" || key == "configs" => Some(s.clone()),
        Value::String(s) => {
            let mut parts = s.split(':');
            let first = parts.next()?;
            Some(parts.next().unwrap_or(first).to_string())
        }
        Value::Object(o) => o
            .get("target")
            .or_else(|| o.get("source"))
            .and_then(Value::as_str)
            .map(String::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn services_merge_with_compose_rules() {
        let mut base = json!({
            "image": "app:1",
            "ports": ["80:80"],
            "environment": ["A=1", "B=2"],
            "labels": { "x": "1" },
            "volumes": ["./data:/data", "logs:/logs:ro"],
            "command": ["serve", "--dev"],
            "depends_on": ["db"],
            "healthcheck": { "test": "true", "interval": "5s" },
        });
        merge_service(
            &mut base,
            json!({
                "ports": ["80:80", "9229:9229"],
                "environment": { "B": "3", "C": "4" },
                "labels": ["y=2"],
                "volumes": ["/srv/data:/data"],
                "command": ["serve"],
                "depends_on": { "cache": { "condition": "service_healthy" } },
                "healthcheck": { "interval": "10s" },
            }),
        );
        assert_eq!(
            base,
            json!({
                "image": "app:1",
                "ports": ["80:80", "9229:9229"],
                "environment": { "A": "1", "B": "3", "C": "4" },
                "labels": { "x": "1", "y": "2" },
                "volumes": ["/srv/data:/data", "logs:/logs:ro"],
                "command": ["serve"],
                "depends_on": { "db": null, "cache": { "condition": "service_healthy" } },
                "healthcheck": { "test": "true", "interval": "10s" },
            })
        );
    }

    #[test]
    fn documents_merge_service_by_service() {
        let mut base = json!({
            "name": "shop",
            "services": { "web": { "image": "a" }, "db": { "image": "pg" } },
            "volumes": { "data": null },
        });
        merge_documents(
            base.as_object_mut().unwrap(),
            json!({
                "services": { "web": { "expose": [80] }, "debug": { "image": "b" } },
                "volumes": { "cache": {} },
            })
            .as_object()
            .unwrap()
            .clone(),
        );
        assert_eq!(
            base["services"]["web"],
            json!({ "image": "a", "expose": [80] })
        );
        assert_eq!(base["services"]["debug"]["image"], "b");
        assert_eq!(base["volumes"], json!({ "data": null, "cache": {} }));
        assert_eq!(base["name"], "shop");
    }

    #[test]
    fn override_files_follow_the_chosen_name() {
        assert_eq!(
            override_names("compose.yaml"),
            vec!["compose.override.yaml", "compose.override.yml"]
        );
        assert_eq!(
            override_names("docker-compose.yml"),
            vec![
                "docker-compose.override.yaml",
                "docker-compose.override.yml"
            ]
        );
        assert!(override_names("stack.yml").is_empty());
    }
}
