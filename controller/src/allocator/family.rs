//! Which IP families a Service needs, from `spec.ipFamilies` / `spec.ipFamilyPolicy`.
//!
//! Must not: look at pools; the allocator decides whether dual-stack can be served.

use ferrolb_config::{IpFamily, IpFamilyPolicy, ServiceView};

/// The families a Service wants: `required` must all be served; with `PreferDualStack` the
/// `preferred` list (both families) is tried first and `required` is the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Families {
    pub required: Vec<IpFamily>,
    pub preferred: Option<Vec<IpFamily>>,
}

fn other(f: IpFamily) -> IpFamily {
    match f {
        IpFamily::V4 => IpFamily::V6,
        IpFamily::V6 => IpFamily::V4,
    }
}

/// The Service's families, primary first. With no `ipFamilies`, the cluster IPs decide, else IPv4.
pub fn families(v: &ServiceView) -> Families {
    let primary = v
        .ip_families
        .first()
        .copied()
        .or_else(|| v.cluster_ips.first().map(IpFamily::of))
        .unwrap_or(IpFamily::V4);
    let both = || vec![primary, other(primary)];
    match v.ip_family_policy {
        IpFamilyPolicy::SingleStack => Families {
            required: vec![primary],
            preferred: None,
        },
        IpFamilyPolicy::RequireDualStack => Families {
            required: both(),
            preferred: None,
        },
        IpFamilyPolicy::PreferDualStack => Families {
            required: vec![primary],
            preferred: Some(both()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_config::ServiceKey;

    #[test]
    fn policies() {
        let mut v = ServiceView::new_load_balancer(ServiceKey::new("ns", "a"));
        assert_eq!(families(&v).required, vec![IpFamily::V4]);
        v.ip_families = vec![IpFamily::V6];
        v.ip_family_policy = IpFamilyPolicy::RequireDualStack;
        assert_eq!(families(&v).required, vec![IpFamily::V6, IpFamily::V4]);
        v.ip_family_policy = IpFamilyPolicy::PreferDualStack;
        let f = families(&v);
        assert_eq!(f.required, vec![IpFamily::V6]);
        assert_eq!(f.preferred, Some(vec![IpFamily::V6, IpFamily::V4]));
        v.ip_families.clear();
        v.ip_family_policy = IpFamilyPolicy::SingleStack;
        v.cluster_ips = vec!["2001:db8::1".parse().unwrap()];
        assert_eq!(families(&v).required, vec![IpFamily::V6]);
    }
}
