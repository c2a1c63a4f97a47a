//! Reads Kubernetes v1 Service manifests (a `v1 List` as `kubectl get svc -A -o yaml` prints it,
//! a single Service, or multi-document YAML) into [`ServiceView`]s, for `config check --services`
//! and standalone mode.
//!
//! Lenient like the apiserver's clients: unknown fields are ignored, objects of other kinds are
//! skipped, malformed optional values are dropped (the allocator reports what matters). Only a
//! Service without `metadata.name`, or a YAML syntax error, is an error.
//!
//! Must not: decide anything about the Services.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

use crate::errors::{ConfigError, ConfigErrors};
use crate::service::{ServiceFields, ServiceKey, ServiceView};
use crate::yamlx::{describe, scalar_text, untag};

/// Every Service in `text`, in input order.
///
/// Streams: each YAML document's value tree is turned into [`ServiceView`]s and dropped before
/// the next document is parsed (10k one-Service documents would otherwise hold ~40 MB of trees
/// at once). Only the first document waits for the second, to know whether error paths need
/// `document[d]`. A `kind: List` is one document, so its tree is still whole.
pub fn parse_services(text: &str) -> Result<Vec<ServiceView>, ConfigErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut first: Option<Value> = None;
    let mut count = 0usize;
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = match Value::deserialize(doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                return Err(ConfigErrors::one(ConfigError::syntax("<services>", &e)));
            }
        };
        count += 1;
        if count == 1 {
            first = Some(v);
            continue;
        }
        if let Some(f) = first.take() {
            collect(&f, "document[0]", &mut out, &mut errors);
        }
        collect(
            &v,
            &format!("document[{}]", count - 1),
            &mut out,
            &mut errors,
        );
    }
    if let Some(f) = first {
        collect(&f, "", &mut out, &mut errors);
    }
    if errors.is_empty() {
        // The list is kept for the life of standalone mode: drop the growth slack (up to half).
        out.shrink_to_fit();
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn at(base: &str, rest: &str) -> String {
    if base.is_empty() {
        rest.to_string()
    } else {
        format!("{base}.{rest}")
    }
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match untag(v) {
        Value::Mapping(m) => m.get(key).map(untag).filter(|v| !v.is_null()),
        _ => None,
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    get(v, key).and_then(scalar_text)
}

fn collect(doc: &Value, base: &str, out: &mut Vec<ServiceView>, errors: &mut Vec<ConfigError>) {
    let kind = text(doc, "kind");
    if let Some(items) = get(doc, "items") {
        let Some(items) = items.as_sequence() else {
            errors.push(ConfigError::new(
                at(base, "items"),
                Some(describe(items)),
                "expected a list",
            ));
            return;
        };
        for (i, item) in items.iter().enumerate() {
            collect(item, &at(base, &format!("items[{i}]")), out, errors);
        }
        return;
    }
    match kind.as_deref() {
        Some("Service") => match service(doc) {
            Ok(v) => out.push(v),
            Err(why) => errors.push(ConfigError::new(at(base, "metadata.name"), None, why)),
        },
        Some(_) => {}
        None if untag(doc).is_mapping() => errors.push(ConfigError::new(
            if base.is_empty() {
                "<services>".to_string()
            } else {
                base.to_string()
            },
            None,
            "not a Kubernetes object (no kind); expected a v1 List or Services",
        )),
        None => errors.push(ConfigError::new(
            if base.is_empty() {
                "<services>".to_string()
            } else {
                base.to_string()
            },
            Some(describe(doc)),
            "expected a Kubernetes object",
        )),
    }
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Mapping(m)) = v.map(untag) {
        for (k, val) in m {
            if let (Some(k), Some(val)) = (scalar_text(k), scalar_text(val)) {
                out.insert(k, val);
            }
        }
    }
    out
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|s| s.iter().filter_map(scalar_text).collect())
        .unwrap_or_default()
}

fn service(doc: &Value) -> Result<ServiceView, String> {
    let meta = get(doc, "metadata");
    let name = meta
        .and_then(|m| text(m, "name"))
        .filter(|n| !n.is_empty())
        .ok_or("required: every Service needs metadata.name")?;
    let namespace = meta
        .and_then(|m| text(m, "namespace"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let null = Value::Null;
    let spec = get(doc, "spec").unwrap_or(&null);
    let ports = get(spec, "ports")
        .and_then(Value::as_sequence)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let port = get(p, "port")?.as_i64()?;
                    Some((text(p, "protocol"), port))
                })
                .collect()
        })
        .unwrap_or_default();
    let ingress_ips = get(doc, "status")
        .and_then(|s| get(s, "loadBalancer"))
        .and_then(|lb| get(lb, "ingress"))
        .and_then(Value::as_sequence)
        .map(|ing| ing.iter().filter_map(|i| text(i, "ip")).collect())
        .unwrap_or_default();
    Ok(ServiceFields {
        key: ServiceKey::new(namespace, name),
        type_: text(spec, "type"),
        load_balancer_class: text(spec, "loadBalancerClass"),
        ip_families: strings(get(spec, "ipFamilies")),
        ip_family_policy: text(spec, "ipFamilyPolicy"),
        cluster_ips: strings(get(spec, "clusterIPs")),
        cluster_ip: text(spec, "clusterIP"),
        load_balancer_ip: text(spec, "loadBalancerIP"),
        annotations: string_map(meta.and_then(|m| get(m, "annotations"))),
        labels: string_map(meta.and_then(|m| get(m, "labels"))),
        ports,
        external_traffic_policy: text(spec, "externalTrafficPolicy"),
        selector: string_map(get(spec, "selector")),
        ingress_ips,
    }
    .into_view())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::IpFamily;
    use crate::service::{IpFamilyPolicy, ServicePort, TrafficPolicy};
    use std::net::IpAddr;

    const LIST: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: web
    namespace: shop
    annotations: {metallb.universe.tf/allow-shared-ip: "k"}
    labels: {app: web}
    creationTimestamp: "2021-01-01T00:00:00Z"
  spec:
    type: LoadBalancer
    loadBalancerClass: ferrolb
    loadBalancerIP: 192.0.2.10
    clusterIP: 10.96.0.10
    clusterIPs: [10.96.0.10, "fd00::10"]
    ipFamilies: [IPv4, IPv6]
    ipFamilyPolicy: RequireDualStack
    externalTrafficPolicy: Local
    selector: {app: web}
    ports:
    - {name: http, port: 80, protocol: TCP, targetPort: 8080}
    - {port: 53, protocol: UDP}
    - {port: 443}
  status:
    loadBalancer:
      ingress: [{ip: 192.0.2.10}, {ip: "2001:db8::10"}, {hostname: x.example}]
- apiVersion: v1
  kind: Service
  metadata: {name: plain}
  spec: {type: ClusterIP, clusterIP: None}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: ignored}
"#;

    #[test]
    fn reads_every_field_of_a_list() {
        let v = parse_services(LIST).unwrap();
        assert_eq!(v.len(), 2);
        let web = &v[0];
        assert_eq!(web.key, ServiceKey::new("shop", "web"));
        assert!(web.is_load_balancer);
        assert_eq!(web.load_balancer_class.as_deref(), Some("ferrolb"));
        assert_eq!(web.load_balancer_ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(web.ip_families, vec![IpFamily::V4, IpFamily::V6]);
        assert_eq!(web.ip_family_policy, IpFamilyPolicy::RequireDualStack);
        assert_eq!(
            web.cluster_ips,
            vec![
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "fd00::10".parse().unwrap()
            ]
        );
        assert_eq!(web.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(web.selector.get("app").map(String::as_str), Some("web"));
        assert_eq!(web.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(web.annotations.len(), 1);
        assert_eq!(
            web.ports,
            vec![
                ServicePort {
                    protocol: "TCP".into(),
                    port: 80
                },
                ServicePort {
                    protocol: "UDP".into(),
                    port: 53
                },
                ServicePort {
                    protocol: "TCP".into(),
                    port: 443
                },
            ]
        );
        assert_eq!(
            web.ingress_ips,
            vec![
                "192.0.2.10".parse::<IpAddr>().unwrap(),
                "2001:db8::10".parse().unwrap()
            ]
        );
        let plain = &v[1];
        assert_eq!(plain.key, ServiceKey::new("default", "plain"));
        assert!(!plain.is_load_balancer);
        assert!(plain.cluster_ips.is_empty());
        assert!(plain.ip_families.is_empty());
    }

    #[test]
    fn multi_document_and_errors() {
        let v = parse_services("kind: Service\nmetadata: {name: a}\n---\nkind: Service\nmetadata: {name: b, namespace: n}\n").unwrap();
        assert_eq!(
            v.iter().map(|s| s.key.to_string()).collect::<Vec<_>>(),
            vec!["default/a", "n/b"]
        );
        let e =
            parse_services("kind: List\nitems:\n- kind: Service\n  metadata: {}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "items[0].metadata.name: required: every Service needs metadata.name"
        );
        let e = parse_services("a: [").unwrap_err();
        assert!(e.0[0].line.is_some());
        assert!(parse_services("").unwrap().is_empty());
    }

    #[test]
    fn streamed_documents_keep_their_paths_order_and_syntax_errors() {
        // Errors in the first and a later document; empty documents are not counted.
        let e = parse_services(
            "kind: Service\nmetadata: {}\n---\n---\nkind: Service\nmetadata: {name: ok}\n---\nkind: Service\nmetadata: {}\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = e.0.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["document[0].metadata.name", "document[2].metadata.name"]
        );
        // One document: no prefix; an empty document before it changes nothing.
        let e = parse_services("---\n---\nkind: Service\nmetadata: {}\n").unwrap_err();
        assert_eq!(e.0[0].path, "metadata.name");
        // Input order across documents and lists.
        let v = parse_services(
            "kind: Service\nmetadata: {name: a}\n---\nkind: List\nitems:\n- {kind: Service, metadata: {name: b}}\n- {kind: Service, metadata: {name: c}}\n---\nkind: Service\nmetadata: {name: d}\n",
        )
        .unwrap();
        let names: Vec<&str> = v.iter().map(|s| s.key.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "c", "d"]);
        // A syntax error in a later document wins over conversion errors before it.
        let e = parse_services("kind: Service\nmetadata: {}\n---\na: [\n").unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(e.0[0].reason.contains("syntax"), "{e}");
    }
}
