//! `xalo bench portal` at a tiny size: a whole nation in this process, four citizens
//! signed in with Mobile-ID, one second of applications. The figures must be sane (every
//! page opened, dossiers really stored, prefilled, no errors); nothing here depends on
//! how fast the machine is.

use xalo_core::Config;
use xalo_core::config::RoleConfig;
use xalo_portal::bench::{BenchOptions, PageKind};
use xalo_store::testing::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_benchmark_submits_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    // The portal on the selected test database; the other roles on SQLite files.
    let portal_db = TestDatabase::new().await.unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    config.roles.insert(
        "portal".into(),
        RoleConfig {
            database_url: Some(portal_db.url().to_owned()),
            ..RoleConfig::default()
        },
    );
    let report = xalo_portal::bench::run_with(
        config,
        &BenchOptions {
            citizens: 4,
            seconds: 1,
            persons: 400,
            sign_in_concurrency: 2,
        },
    )
    .await
    .unwrap();
    let text = report.to_string();
    println!("{text}");
    assert_eq!(report.errors, 0, "{text}");
    assert!(report.first_errors.is_empty(), "{text}");
    assert_eq!(report.citizens, 4);
    assert!(report.persons >= 400, "{text}");
    assert!(report.submissions > 0, "{text}");
    assert!(report.submissions_per_sec > 0.0, "{text}");
    // Every application opened each page once; the last page of each was its dossier.
    for p in &report.pages {
        assert_eq!(p.count as u64, report.submissions, "{:?} in {text}", p.kind);
        assert!(p.p50 > std::time::Duration::ZERO && p.p50 <= p.p99 && p.p99 <= p.max);
        // The portal's own time is part of what the browser waited.
        let server = p.server_mean.expect("the portal's metrics count the page");
        assert!(
            server > std::time::Duration::ZERO && server <= p.max,
            "{text}"
        );
    }
    assert_eq!(report.pages.len(), PageKind::ALL.len());
    assert!(report.page_p50 <= report.page_p99);
    // Applicant (personal code, name, birth date, residence) and spouse (code, name).
    assert!(report.prefilled_fields_per_draft >= 6.0, "{text}");
    let share = report.prefill_share.expect("the metrics were read");
    assert!(share > 0.0 && share < 1.0, "{text}");
    // The dossiers are stored, prefilled and submitted: the measured ones and the warm-up.
    let mut submitted = 0;
    for code in &report.applicants {
        let person: xalo_core::PersonalCode = code.parse().unwrap();
        for d in xalo_portal::dossier::list_for(&portal_db.db, &person)
            .await
            .unwrap()
        {
            // A draft left by a retried warm-up is not counted.
            if d.state != xalo_portal::dossier::State::Submitted {
                continue;
            }
            assert_eq!(d.form["applicant_personal_code"], code.as_str());
            assert!(
                d.form["other_parent_personal_code"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("VN") && c != code),
                "the spouse is prefilled: {}",
                d.form
            );
            submitted += 1;
        }
    }
    assert_eq!(submitted, report.submissions + 1, "{text}");
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("portal: ") && last.contains(" submissions/s, p99 page "),
        "{last}"
    );
    assert!(last.ends_with("4 citizens, 0 errors"), "{last}");
}
