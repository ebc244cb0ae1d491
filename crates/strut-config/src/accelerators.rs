//! The accelerators truss knows and the memory of each: the single table strut uses.
//!
//! Types and their order: truss's `Accelerator` enum (`truss/base/truss_config.py`, truss
//! 0.18.35). Memory per GPU: the table in `shared/reference/truss-contract.md` §2, which takes
//! H100 (80 GB) and H100_40GB (a 40 GB MIG slice) from Baseten's resource docs and the rest
//! from NVIDIA's public specs. Where the reference gives a range (B200: 180–192 GB) we take
//! the low end, the memory a deployment can count on. B10 is internal to Baseten and its
//! memory is unknown, so no fit check is made for it. Figures are nominal decimal GB.

use std::fmt;

use serde::{Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gpu {
    B10,
    T4,
    L4,
    A10G,
    V100,
    A100,
    A100_40GB,
    H100,
    H200,
    H100_40GB,
    B200,
    L40S,
    RtxPro6000,
    B300,
    GB300,
}

/// (type, name as written in config.yaml, memory per GPU in GB).
const TABLE: &[(Gpu, &str, Option<u32>)] = &[
    (Gpu::B10, "B10", None),
    (Gpu::T4, "T4", Some(16)),
    (Gpu::L4, "L4", Some(24)),
    (Gpu::A10G, "A10G", Some(24)),
    // The 32 GB V100 exists; which one Baseten offers is unconfirmed, so the smaller.
    (Gpu::V100, "V100", Some(16)),
    (Gpu::A100, "A100", Some(80)),
    (Gpu::A100_40GB, "A100_40GB", Some(40)),
    (Gpu::H100, "H100", Some(80)),
    (Gpu::H200, "H200", Some(141)),
    (Gpu::H100_40GB, "H100_40GB", Some(40)),
    (Gpu::B200, "B200", Some(180)),
    (Gpu::L40S, "L40S", Some(48)),
    (Gpu::RtxPro6000, "RTX_PRO_6000", Some(96)),
    (Gpu::B300, "B300", Some(288)),
    (Gpu::GB300, "GB300", Some(288)),
];

impl Gpu {
    /// Every type, in truss's declaration order (the order its error message lists them).
    pub fn all() -> impl Iterator<Item = Gpu> {
        TABLE.iter().map(|(g, _, _)| *g)
    }

    pub fn name(self) -> &'static str {
        TABLE
            .iter()
            .find(|(g, _, _)| *g == self)
            .map(|(_, n, _)| *n)
            .unwrap_or("?")
    }

    /// Exact, case-sensitive match, as truss does it.
    pub fn parse(name: &str) -> Option<Gpu> {
        TABLE
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(g, _, _)| *g)
    }

    /// Memory per GPU in GB, `None` where unknown.
    pub fn memory_gb(self) -> Option<u32> {
        TABLE
            .iter()
            .find(|(g, _, _)| *g == self)
            .and_then(|(_, _, m)| *m)
    }

    /// "B10, T4, L4, …" as truss lists them in its error message.
    pub fn valid_list() -> String {
        Gpu::all().map(Gpu::name).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Gpu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A requested accelerator: a type and a count. Displays as truss writes it back
/// (`A10G`, `A10G:2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accelerator {
    pub gpu: Gpu,
    /// truss's dict form allows 0, which it then serialises as no accelerator.
    pub count: u32,
}

impl Accelerator {
    /// truss's serialised form: `None` when the count is 0, the bare type for 1.
    pub fn truss_string(&self) -> Option<String> {
        match self.count {
            0 => None,
            1 => Some(self.gpu.name().to_string()),
            n => Some(format!("{}:{n}", self.gpu.name())),
        }
    }

    /// Total GPU memory in GB, when the type's memory is known.
    pub fn total_memory_gb(&self) -> Option<u64> {
        self.gpu
            .memory_gb()
            .map(|m| u64::from(m) * u64::from(self.count))
    }
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.count {
            1 => write!(f, "{}", self.gpu),
            n => write!(f, "{}:{n}", self.gpu),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for g in Gpu::all() {
            assert_eq!(Gpu::parse(g.name()), Some(g));
        }
        assert_eq!(Gpu::parse("h100"), None);
        assert_eq!(Gpu::parse("A10"), None);
        assert_eq!(
            Gpu::valid_list(),
            "B10, T4, L4, A10G, V100, A100, A100_40GB, H100, H200, H100_40GB, B200, L40S, RTX_PRO_6000, B300, GB300"
        );
    }

    #[test]
    fn displays_like_truss() {
        let a = Accelerator {
            gpu: Gpu::A10G,
            count: 2,
        };
        assert_eq!(a.to_string(), "A10G:2");
        assert_eq!(a.truss_string().as_deref(), Some("A10G:2"));
        assert_eq!(
            Accelerator {
                gpu: Gpu::H100,
                count: 1
            }
            .truss_string()
            .as_deref(),
            Some("H100")
        );
        assert_eq!(
            Accelerator {
                gpu: Gpu::H100,
                count: 0
            }
            .truss_string(),
            None
        );
        assert_eq!(a.total_memory_gb(), Some(48));
    }
}
