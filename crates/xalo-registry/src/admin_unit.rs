//! Vietnam's administrative units after the reform of 1 July 2025: 34 provinces and
//! centrally run cities, and their 3,321 wards, communes and special zones.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Province {
    /// Two-digit statistics office code, e.g. `22`.
    pub code: String,
    pub name: String,
    /// `tỉnh` or `thành phố trung ương`.
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unit {
    /// Five-digit statistics office code, e.g. `06970`.
    pub code: String,
    pub name: String,
    /// `phường`, `xã` or `đặc khu`.
    pub kind: String,
    pub province: String,
}

/// The administrative map, loaded once from the data the crate ships.
pub struct AdminUnits {
    pub provinces: Vec<Province>,
    pub units: Vec<Unit>,
    by_code: BTreeMap<String, usize>,
}

static UNITS: LazyLock<AdminUnits> = LazyLock::new(|| {
    let mut provinces: Vec<Province> = Vec::new();
    let mut units = Vec::new();
    for line in include_str!("../data/vn-admin-units-2025.csv")
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = line.split(',').collect();
        let [pcode, pname, pkind, ucode, uname, ukind] = f.as_slice() else {
            continue;
        };
        if provinces.last().is_none_or(|p| p.code != *pcode)
            && !provinces.iter().any(|p| p.code == *pcode)
        {
            provinces.push(Province {
                code: (*pcode).into(),
                name: (*pname).into(),
                kind: (*pkind).into(),
            });
        }
        units.push(Unit {
            code: (*ucode).into(),
            name: (*uname).into(),
            kind: (*ukind).into(),
            province: (*pcode).into(),
        });
    }
    let by_code = units
        .iter()
        .enumerate()
        .map(|(i, u)| (u.code.clone(), i))
        .collect();
    AdminUnits {
        provinces,
        units,
        by_code,
    }
});

/// The administrative map.
pub fn admin_units() -> &'static AdminUnits {
    &UNITS
}

impl AdminUnits {
    pub fn unit(&self, code: &str) -> Option<&Unit> {
        self.by_code.get(code).map(|&i| &self.units[i])
    }
    pub fn province(&self, code: &str) -> Option<&Province> {
        self.provinces.iter().find(|p| p.code == code)
    }
    pub fn units_of(&self, province: &str) -> impl Iterator<Item = &Unit> {
        self.units.iter().filter(move |u| u.province == province)
    }
    /// "Phường Hồng Gai, Quảng Ninh": a unit with its province, as addresses print it.
    pub fn describe(&self, unit_code: &str) -> Option<String> {
        let u = self.unit(unit_code)?;
        let p = self.province(&u.province)?;
        Some(format!("{}, {}", u.name, p.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_2025_map() {
        let a = admin_units();
        assert_eq!(a.provinces.len(), 34);
        assert_eq!(a.units.len(), 3321);
        assert_eq!(a.province("22").unwrap().name, "Quảng Ninh");
        assert_eq!(a.units.iter().filter(|u| u.kind == "đặc khu").count(), 13);
        for u in &a.units {
            assert!(a.province(&u.province).is_some(), "{u:?}");
        }
        assert!(a.units_of("01").count() > 100);
    }
}
