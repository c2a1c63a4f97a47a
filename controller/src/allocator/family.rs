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

fn primary(v: &ServiceView) -> IpFamily {
    v.ip_families
        .first()
        .copied()
        .or_else(|| v.cluster_ips.first().map(IpFamily::of))
        .unwrap_or(IpFamily::V4)
}

/// The Service's families, primary first. With no `ipFamilies`, the cluster IPs decide, else IPv4.
pub fn families(v: &ServiceView) -> Families {
    let primary = primary(v);
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

/// Up to two families in order, without a heap allocation (the allocator's form of a family
/// list; [`Families`] is the public one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FamList {
    fams: [IpFamily; 2],
    len: u8,
}

impl FamList {
    pub(crate) fn one(f: IpFamily) -> FamList {
        FamList {
            fams: [f, f],
            len: 1,
        }
    }

    pub(crate) fn both(primary: IpFamily) -> FamList {
        FamList {
            fams: [primary, other(primary)],
            len: 2,
        }
    }

    /// Appends `f` unless present (a list never holds a family twice, so at most two).
    pub(crate) fn add(&mut self, f: IpFamily) {
        if !self.contains(&f) && usize::from(self.len) < self.fams.len() {
            self.fams[usize::from(self.len)] = f;
            self.len += 1;
        }
    }
}

impl std::ops::Deref for FamList {
    type Target = [IpFamily];
    fn deref(&self) -> &[IpFamily] {
        &self.fams[..usize::from(self.len)]
    }
}

impl PartialEq for FamList {
    fn eq(&self, other: &FamList) -> bool {
        **self == **other
    }
}

/// [`Families`] without heap allocations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fams {
    pub(crate) required: FamList,
    pub(crate) preferred: Option<FamList>,
}

/// [`families`] as a [`Fams`].
pub(crate) fn fams(v: &ServiceView) -> Fams {
    let primary = primary(v);
    match v.ip_family_policy {
        IpFamilyPolicy::SingleStack => Fams {
            required: FamList::one(primary),
            preferred: None,
        },
        IpFamilyPolicy::RequireDualStack => Fams {
            required: FamList::both(primary),
            preferred: None,
        },
        IpFamilyPolicy::PreferDualStack => Fams {
            required: FamList::one(primary),
            preferred: Some(FamList::both(primary)),
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

    #[test]
    fn compact_form_matches_families() {
        let mut v = ServiceView::new_load_balancer(ServiceKey::new("ns", "a"));
        for fam in [vec![], vec![IpFamily::V4], vec![IpFamily::V6]] {
            for policy in [
                IpFamilyPolicy::SingleStack,
                IpFamilyPolicy::PreferDualStack,
                IpFamilyPolicy::RequireDualStack,
            ] {
                v.ip_families = fam.clone();
                v.ip_family_policy = policy;
                let (f, c) = (families(&v), fams(&v));
                assert_eq!(f.required, c.required.to_vec());
                assert_eq!(f.preferred, c.preferred.map(|p| p.to_vec()));
            }
        }
        let mut l = FamList::one(IpFamily::V6);
        l.add(IpFamily::V6);
        assert_eq!(*l, [IpFamily::V6]);
        l.add(IpFamily::V4);
        l.add(IpFamily::V4);
        assert_eq!(*l, [IpFamily::V6, IpFamily::V4]);
        assert_eq!(l, FamList::both(IpFamily::V6));
    }
}
