//! A synthetic nation: families across the provinces with valid personal codes, and the
//! enterprises they found. Deterministic for a seed, streamed into the database in batches
//! (COPY on PostgreSQL), so it scales to tens of millions of people.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xalo_core::{Error, Gender, PersonalCode};
use xalo_store::{Backend, Database, DbResultExt};

use crate::admin_unit::admin_units;
use crate::model::{Enterprise, LEGAL_FORMS, Person, TaxCode};
use crate::names;
use crate::store;

/// People written per transaction or COPY.
const BATCH: usize = 5_000;
/// The year the population is as of.
const CENSUS_YEAR: i32 = 2025;

fn weighted<'a>(rng: &mut ChaCha8Rng, items: &'a [(&'a str, u32)]) -> &'a str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total.max(1));
    for (item, w) in items {
        if pick < *w {
            return item;
        }
        pick -= w;
    }
    items.first().map_or("", |(i, _)| i)
}

/// Makes people and enterprises; holds the serial counters that keep codes unique.
pub struct Generator {
    rng: ChaCha8Rng,
    /// Next serial per (birth province, gender, birth year).
    serials: HashMap<(u16, bool, i32), u32>,
    next_tax: u64,
    units_by_province: HashMap<&'static str, Vec<&'static str>>,
    birth_codes: Vec<u16>,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        let mut units_by_province: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        for u in &admin_units().units {
            units_by_province
                .entry(u.province.as_str())
                .or_default()
                .push(u.code.as_str());
        }
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            serials: HashMap::new(),
            next_tax: 10_000_000,
            units_by_province,
            birth_codes: xalo_core::personal_code::vn_province_codes().collect(),
        }
    }

    fn code(
        &mut self,
        residence_province: &str,
        gender: Gender,
        year: i32,
    ) -> Result<PersonalCode, Error> {
        // Most people were born in the province they live in; one in five moved.
        let home: u16 = residence_province.parse().unwrap_or(1);
        let province = if self.rng.random_bool(0.8)
            && xalo_core::personal_code::vn_province_name(home).is_some()
        {
            home
        } else {
            *self.birth_codes.choose(&mut self.rng).unwrap_or(&1)
        };
        let serial = self
            .serials
            .entry((province, gender == Gender::Female, year))
            .or_insert(0);
        *serial += 1;
        Ok(PersonalCode::vietnamese(province, gender, year, *serial)?)
    }

    fn date_in(&mut self, year: i32) -> String {
        let day = self.rng.random_range(0..365);
        let d = NaiveDate::from_ymd_opt(year, 1, 1)
            .map(|d| d + chrono::Duration::days(day))
            .filter(|d| d.year() == year)
            .or_else(|| NaiveDate::from_ymd_opt(year, 12, 31));
        d.map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    }

    fn person(
        &mut self,
        gender: Gender,
        year: i32,
        family_name: &str,
        province: &str,
        unit: &str,
        address: &str,
    ) -> Result<Person, Error> {
        let (middle, given) = match gender {
            Gender::Male => (
                weighted(&mut self.rng, names::MIDDLE_MALE),
                names::GIVEN_MALE.choose(&mut self.rng),
            ),
            Gender::Female => (
                weighted(&mut self.rng, names::MIDDLE_FEMALE),
                names::GIVEN_FEMALE.choose(&mut self.rng),
            ),
        };
        Ok(Person {
            code: self.code(province, gender, year)?,
            family_name: family_name.to_owned(),
            middle_name: middle.to_owned(),
            given_name: given.copied().unwrap_or("An").to_owned(),
            birth_date: self.date_in(year),
            gender,
            birth_place: unit.to_owned(),
            nationality: "VN".into(),
            residence_unit: unit.to_owned(),
            residence_address: address.to_owned(),
            temporary_residence_unit: None,
            father: None,
            mother: None,
            spouse: None,
            alive: true,
            death_date: None,
        })
    }

    /// One household: a couple (or a single adult) and their children.
    pub fn household(&mut self) -> Result<Vec<Person>, Error> {
        let province = weighted(&mut self.rng, names::PROVINCE_WEIGHTS);
        let unit = self
            .units_by_province
            .get(province)
            .and_then(|u| u.choose(&mut self.rng).copied())
            .unwrap_or("00070");
        let street = names::STREETS
            .choose(&mut self.rng)
            .copied()
            .unwrap_or("Lê Lợi");
        let address = format!("Số {} đường {street}", self.rng.random_range(1..400));
        let family = weighted(&mut self.rng, names::FAMILY).to_owned();
        let head_year = CENSUS_YEAR - self.rng.random_range(20..80);
        let mut head = self.person(Gender::Male, head_year, &family, province, unit, &address)?;
        let mut out = Vec::new();
        if self.rng.random_bool(0.85) {
            let wife_family = weighted(&mut self.rng, names::FAMILY).to_owned();
            let wife_year = (head_year + self.rng.random_range(-2..6)).min(CENSUS_YEAR - 18);
            let mut wife = self.person(
                Gender::Female,
                wife_year,
                &wife_family,
                province,
                unit,
                &address,
            )?;
            wife.spouse = Some(head.code);
            head.spouse = Some(wife.code);
            let youngest_parent = head_year.max(wife_year);
            let children = self.rng.random_range(0..4);
            for _ in 0..children {
                let year = youngest_parent + self.rng.random_range(20..40);
                if year > CENSUS_YEAR {
                    continue;
                }
                let gender = if self.rng.random_bool(0.51) {
                    Gender::Male
                } else {
                    Gender::Female
                };
                let mut child = self.person(gender, year, &family, province, unit, &address)?;
                child.father = Some(head.code);
                child.mother = Some(wife.code);
                out.push(child);
            }
            if head_year < 1950 && self.rng.random_bool(0.3) {
                wife.alive = false;
                let died = CENSUS_YEAR - self.rng.random_range(0..5);
                wife.death_date = Some(self.date_in(died));
            }
            out.insert(0, wife);
        }
        out.insert(0, head);
        Ok(out)
    }

    /// An enterprise founded by `founders` (the first is its legal representative).
    pub fn enterprise(&mut self, founders: &[&Person]) -> Option<Enterprise> {
        let rep = founders.first()?;
        let code = loop {
            let n = self.next_tax;
            self.next_tax += 1;
            // The first two digits name the province of the tax office.
            let province: u64 = admin_units()
                .unit(&rep.residence_unit)
                .and_then(|u| u.province.parse().ok())
                .unwrap_or(1);
            if let Some(c) = TaxCode::from_first9(province * 10_000_000 + n % 10_000_000) {
                break c;
            }
        };
        let form = LEGAL_FORMS
            .choose(&mut self.rng)
            .copied()
            .unwrap_or(LEGAL_FORMS[0]);
        let words = names::COMPANY_WORDS
            .choose(&mut self.rng)
            .copied()
            .unwrap_or("An Phú");
        let (line, _) = names::BUSINESS_LINES
            .choose(&mut self.rng)
            .copied()
            .unwrap_or(("6201", ""));
        let short_form = if form.contains("cổ phần") {
            "Công ty Cổ phần"
        } else if form.contains("TNHH") {
            "Công ty TNHH"
        } else {
            "Doanh nghiệp"
        };
        let founded = self.rng.random_range(2000..CENSUS_YEAR);
        let registered_on = self.date_in(founded);
        Some(Enterprise {
            code,
            name: format!(
                "{short_form} {words} {}",
                code.to_string().get(6..).unwrap_or("")
            ),
            foreign_name: Some(format!("{} Company {}", words, code)),
            unit: rep.residence_unit.clone(),
            address: rep.residence_address.clone(),
            legal_form: form.to_owned(),
            charter_capital: i64::from(self.rng.random_range(1u32..500)) * 100_000_000,
            business_lines: vec![line.to_owned()],
            representative: rep.code,
            founders: founders.iter().map(|p| p.code).collect(),
            status: "active".into(),
            registered_on,
        })
    }
}

fn csv_field(out: &mut Vec<u8>, v: &Option<String>) {
    if let Some(v) = v {
        out.push(b'"');
        out.extend_from_slice(v.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    }
}

fn csv_rows(rows: impl Iterator<Item = Vec<Option<String>>>) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            csv_field(&mut out, v);
        }
        out.push(b'\n');
    }
    out
}

async fn write_people(db: &Database, people: &[Person]) -> Result<(), Error> {
    match db.backend() {
        Backend::Postgres => {
            let csv = csv_rows(people.iter().map(|p| store::person_values(p).to_vec()));
            db.postgres_copy(
                &format!(
                    "COPY person ({}) FROM STDIN WITH (FORMAT csv)",
                    store::PERSON_COLUMNS
                ),
                csv,
            )
            .await?;
        }
        Backend::Sqlite => {
            let mut tx = db.begin_write().await?;
            store::insert_people(&mut tx, people).await?;
            tx.commit().await.db("committing people")?;
        }
    }
    Ok(())
}

async fn write_enterprises(db: &Database, list: &[Enterprise]) -> Result<(), Error> {
    match db.backend() {
        Backend::Postgres => {
            let csv = csv_rows(list.iter().map(store::enterprise_values));
            db.postgres_copy(
                &format!(
                    "COPY enterprise ({}) FROM STDIN WITH (FORMAT csv)",
                    store::ENTERPRISE_COLUMNS
                ),
                csv,
            )
            .await?;
        }
        Backend::Sqlite => {
            let mut tx = db.begin_write().await?;
            store::insert_enterprises(&mut tx, list).await?;
            tx.commit().await.db("committing enterprises")?;
        }
    }
    Ok(())
}

/// What a generation run made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    pub persons: u64,
    pub enterprises: u64,
}

/// Generate `persons` people (whole households) and one enterprise per
/// `persons_per_enterprise` people into `db`, reporting progress to `progress`.
pub async fn generate(
    db: &Database,
    persons: u64,
    seed: u64,
    persons_per_enterprise: u64,
    progress: &indicatif::ProgressBar,
) -> Result<Generated, Error> {
    generate_split(db, db, persons, seed, persons_per_enterprise, progress).await
}

/// As [`generate`], with people in the population register's database and enterprises in
/// the business register's.
pub async fn generate_split(
    db: &Database,
    business: &Database,
    persons: u64,
    seed: u64,
    persons_per_enterprise: u64,
    progress: &indicatif::ProgressBar,
) -> Result<Generated, Error> {
    db.migrate("registry", store::MIGRATIONS).await?;
    business.migrate("registry", store::MIGRATIONS).await?;
    let mut g = Generator::new(seed);
    let mut made = Generated {
        persons: 0,
        enterprises: 0,
    };
    let mut batch: Vec<Person> = Vec::with_capacity(BATCH + 8);
    let mut firms: Vec<Enterprise> = Vec::new();
    progress.set_length(persons);
    while made.persons < persons {
        let household = g.household()?;
        let room = (persons - made.persons) as usize;
        let household: Vec<Person> = household.into_iter().take(room).collect();
        // Every so many people, the household's adults found an enterprise.
        let adults: Vec<&Person> = household
            .iter()
            .filter(|p| p.alive && p.birth_date.as_str() < "2007")
            .collect();
        if persons_per_enterprise > 0
            && !adults.is_empty()
            && (made.persons / persons_per_enterprise)
                < ((made.persons + household.len() as u64) / persons_per_enterprise)
            && let Some(e) = g.enterprise(&adults)
        {
            firms.push(e);
        }
        made.persons += household.len() as u64;
        batch.extend(household);
        if batch.len() >= BATCH {
            write_people(db, &batch).await?;
            progress.inc(batch.len() as u64);
            batch.clear();
        }
        if firms.len() >= BATCH {
            write_enterprises(business, &firms).await?;
            made.enterprises += firms.len() as u64;
            firms.clear();
        }
    }
    if !batch.is_empty() {
        write_people(db, &batch).await?;
        progress.inc(batch.len() as u64);
    }
    if !firms.is_empty() {
        write_enterprises(business, &firms).await?;
        made.enterprises += firms.len() as u64;
    }
    progress.finish();
    Ok(made)
}
