use std::collections::{BTreeSet, HashMap};

use xalo_core::{Gender, PersonalCode};
use xalo_registry::admin_unit::admin_units;
use xalo_registry::generate::{Generator, generate};
use xalo_registry::store;
use xalo_store::testing::TestDatabase;

#[test]
fn the_same_seed_makes_the_same_nation() {
    let a: Vec<_> = (0..50)
        .flat_map(|_| Generator::new(7).household().unwrap())
        .take(50)
        .collect();
    let b: Vec<_> = (0..50)
        .flat_map(|_| Generator::new(7).household().unwrap())
        .take(50)
        .collect();
    assert_eq!(a, b);
    let mut g = Generator::new(8);
    let c: Vec<_> = (0..10).flat_map(|_| g.household().unwrap()).collect();
    assert_ne!(a[..c.len().min(a.len())], c[..c.len().min(a.len())]);
}

#[test]
fn households_are_consistent() {
    let mut g = Generator::new(42);
    let mut codes = BTreeSet::new();
    let mut by_code = HashMap::new();
    for _ in 0..2000 {
        for p in g.household().unwrap() {
            assert!(codes.insert(p.code), "duplicate code {}", p.code);
            // The code says the gender and birth year the record has.
            assert_eq!(p.code.gender(), p.gender);
            assert_eq!(p.code.birth_year().to_string(), p.birth_date[..4]);
            assert!(admin_units().unit(&p.residence_unit).is_some());
            assert!(p.code.to_string().parse::<PersonalCode>().is_ok());
            by_code.insert(p.code, p);
        }
    }
    for p in by_code.values() {
        if let Some(m) = p.mother {
            let mother = &by_code[&m];
            assert_eq!(mother.gender, Gender::Female);
            assert!(mother.birth_date.as_str() < p.birth_date.as_str());
            assert_eq!(mother.residence_unit, p.residence_unit);
        }
        if let Some(s) = p.spouse {
            assert_eq!(by_code[&s].spouse, Some(p.code));
        }
    }
    // Names follow the distribution: Nguyễn is the most common family name.
    let nguyen = by_code
        .values()
        .filter(|p| p.family_name == "Nguyễn")
        .count();
    assert!(nguyen * 5 > by_code.len(), "{nguyen} of {}", by_code.len());
}

#[tokio::test]
async fn generation_streams_into_the_database() {
    let t = TestDatabase::new().await.unwrap();
    let bar = indicatif::ProgressBar::hidden();
    let made = generate(&t.db, 12_345, 1, 50, &bar).await.unwrap();
    assert_eq!(made.persons, 12_345);
    assert!(made.enterprises > 100, "{made:?}");
    assert_eq!(store::count(&t.db, "person").await.unwrap(), 12_345);
    assert_eq!(
        store::count(&t.db, "enterprise").await.unwrap(),
        made.enterprises as i64
    );
    let some = store::people_where(&t.db, "1 = 1", &[], 5).await.unwrap();
    assert_eq!(some.len(), 5);
    let e = sqlx::query("SELECT code FROM enterprise LIMIT 1")
        .fetch_one(t.db.pool())
        .await
        .unwrap();
    let code: String = sqlx::Row::get(&e, 0);
    let e = store::enterprise(&t.db, &code).await.unwrap().unwrap();
    assert!(!e.founders.is_empty());
    assert!(code.parse::<xalo_registry::model::TaxCode>().is_ok());
}

#[tokio::test]
async fn a_bulk_load_stores_what_the_generator_makes_and_rebuilds_the_indexes() {
    let t = TestDatabase::new().await.unwrap();
    let bar = indicatif::ProgressBar::hidden();
    // More than one statement's worth of rows; no enterprises, whose making would shift
    // the generator's stream against the replay below.
    let made = generate(&t.db, 25_001, 3, 0, &bar).await.unwrap();
    assert_eq!(made.persons, 25_001);
    // The same seed again gives the rows now in the database, nulls and flags included.
    let mut g = Generator::new(3);
    let mut checked = 0;
    while checked < 300 {
        for p in g.household().unwrap() {
            assert_eq!(store::person(&t.db, &p.code).await.unwrap(), Some(p));
            checked += 1;
        }
    }
    let dead = store::people_where(&t.db, "alive = 0", &[], 5)
        .await
        .unwrap();
    assert!(!dead.is_empty() && dead.iter().all(|p| p.death_date.is_some()));
    // The indexes set aside for the load are back, as the migrations made them.
    let sql = match t.db.backend() {
        xalo_store::Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'index'",
        xalo_store::Backend::Postgres => "SELECT indexname::text FROM pg_indexes",
    };
    let names: BTreeSet<String> = sqlx::query(sql)
        .fetch_all(t.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    for table in [store::PERSON_TABLE, store::ENTERPRISE_TABLE] {
        for (name, _) in table.indexes {
            assert!(names.contains(*name), "{name} missing from {names:?}");
        }
    }
    if t.db.backend() == xalo_store::Backend::Postgres {
        assert!(names.contains("person_pkey") && names.contains("enterprise_pkey"));
    }
    // A search uses them and finds the person.
    let p = store::person(&t.db, &dead[0].code).await.unwrap().unwrap();
    let found = store::people_where(
        &t.db,
        "name_key = $1 AND birth_date = $2",
        &[
            xalo_registry::text::fold(&p.full_name()),
            p.birth_date.clone(),
        ],
        20,
    )
    .await
    .unwrap();
    assert!(found.iter().any(|f| f.code == p.code));
}
