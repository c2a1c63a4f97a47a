//! What a Service asks for: exact addresses (`spec.loadBalancerIP` or the
//! `metallb.universe.tf/loadBalancerIPs` annotation), a pool (`metallb.universe.tf/address-pool`)
//! and a sharing key (`metallb.universe.tf/allow-shared-ip`), parsed with errors that name the
//! field and the value.
//!
//! Must not: look at pools or other Services.

use std::net::IpAddr;

use ferrolb_config::service::annotations;
use ferrolb_config::{IpFamily, ServiceView};

use super::AllocError;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Exact addresses, at most one per family, in the order given.
    pub ips: Vec<IpAddr>,
    /// The requested pool.
    pub pool: Option<String>,
    /// The non-empty `allow-shared-ip` key.
    pub sharing_key: Option<String>,
}

impl Request {
    /// True when the Service names an address or a pool (which unlocks `auto-assign: false` pools).
    pub fn is_explicit(&self) -> bool {
        !self.ips.is_empty() || self.pool.is_some()
    }
}

fn bad(field: &str, value: &str, reason: impl Into<String>) -> AllocError {
    AllocError::BadRequest {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Parses the request of `v`.
pub fn parse_request(v: &ServiceView) -> Result<Request, AllocError> {
    let annotated = v.annotations.get(annotations::LOAD_BALANCER_IPS);
    let lb_ip = v
        .load_balancer_ip
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let (field, raw): (String, Vec<&str>) = match (lb_ip, annotated) {
        (Some(ip), Some(list)) => {
            return Err(bad(
                "spec.loadBalancerIP",
                ip,
                format!(
                    "cannot be combined with annotation {} ({list:?}); use one of them",
                    annotations::LOAD_BALANCER_IPS
                ),
            ))
        }
        (Some(ip), None) => ("spec.loadBalancerIP".to_string(), vec![ip]),
        (None, Some(list)) => (
            format!("annotation {}", annotations::LOAD_BALANCER_IPS),
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect(),
        ),
        (None, None) => (String::new(), Vec::new()),
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for s in raw {
        let ip: IpAddr = s.parse().map_err(|_| bad(&field, s, "not an IP address"))?;
        if ips.iter().any(|o| IpFamily::of(o) == IpFamily::of(&ip)) {
            return Err(bad(
                &field,
                s,
                format!(
                    "more than one {} address (one per family)",
                    IpFamily::of(&ip)
                ),
            ));
        }
        ips.push(ip);
    }
    let pool = match v
        .annotations
        .get(annotations::ADDRESS_POOL)
        .map(|p| p.trim())
    {
        Some("") => {
            return Err(bad(
                &format!("annotation {}", annotations::ADDRESS_POOL),
                "",
                "empty pool name",
            ))
        }
        Some(p) => Some(p.to_string()),
        None => None,
    };
    Ok(Request {
        ips,
        pool,
        sharing_key: sharing_key(v),
    })
}

/// The `allow-shared-ip` key of `v` (trimmed; empty means none).
#[inline]
pub(super) fn sharing_key(v: &ServiceView) -> Option<String> {
    v.annotations
        .get(annotations::ALLOW_SHARED_IP)
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_config::ServiceKey;

    fn svc() -> ServiceView {
        ServiceView::new_load_balancer(ServiceKey::new("ns", "a"))
    }

    #[test]
    fn parses_each_form() {
        let mut v = svc();
        assert_eq!(parse_request(&v).unwrap(), Request::default());
        v.load_balancer_ip = Some("192.0.2.7".into());
        assert_eq!(
            parse_request(&v).unwrap().ips,
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        v.load_balancer_ip = None;
        v.annotations.insert(
            annotations::LOAD_BALANCER_IPS.into(),
            "192.0.2.7, 2001:db8::7".into(),
        );
        v.annotations
            .insert(annotations::ADDRESS_POOL.into(), "gold".into());
        v.annotations
            .insert(annotations::ALLOW_SHARED_IP.into(), "k".into());
        let r = parse_request(&v).unwrap();
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.pool.as_deref(), Some("gold"));
        assert_eq!(r.sharing_key.as_deref(), Some("k"));
        assert!(r.is_explicit());
    }

    #[test]
    fn errors_name_field_and_value() {
        let mut v = svc();
        v.load_balancer_ip = Some("192.0.2.7".into());
        v.annotations
            .insert(annotations::LOAD_BALANCER_IPS.into(), "192.0.2.8".into());
        let e = parse_request(&v).unwrap_err().to_string();
        assert!(
            e.contains("spec.loadBalancerIP") && e.contains("192.0.2.8"),
            "{e}"
        );
        v.load_balancer_ip = None;
        v.annotations.insert(
            annotations::LOAD_BALANCER_IPS.into(),
            "192.0.2.7,banana".into(),
        );
        let e = parse_request(&v).unwrap_err().to_string();
        assert!(e.contains("banana") && e.contains("loadBalancerIPs"), "{e}");
        v.annotations.insert(
            annotations::LOAD_BALANCER_IPS.into(),
            "192.0.2.7,192.0.2.8".into(),
        );
        let e = parse_request(&v).unwrap_err().to_string();
        assert!(e.contains("one per family"), "{e}");
    }

    #[test]
    fn empty_sharing_key_means_no_sharing() {
        let mut v = svc();
        v.annotations
            .insert(annotations::ALLOW_SHARED_IP.into(), " ".into());
        assert_eq!(parse_request(&v).unwrap().sharing_key, None);
    }
}
