//! Service indicators per agency and per procedure, as Decision 766/QĐ-TTg (2022) measures
//! the handling of administrative procedures in real time:
//!
//! - **online share**: dossiers submitted online among all received;
//! - **on-time rate**: dossiers decided (approved or rejected) by their legal due date,
//!   among those decided that had one;
//! - **average processing time**: working days ([`crate::calendar`]) from submission to
//!   decision, over decided dossiers;
//! - **satisfaction**: the mean of citizens' ratings (1–5) of decided dossiers;
//!
//! plus the dossiers still open past their due date. A period selects dossiers by their
//! submission day in Vietnam. The figures are public: `GET /kpi` (page) and `GET /api/kpi`
//! (JSON), both with `group=agency|procedure`, `from` and `to` (`YYYY-MM-DD`).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::Uri;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Row};
use xalo_web::{Lang, Page, Session};

use crate::calendar::Calendar;
use crate::catalogue::{self, Text};

/// How the indicators are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// By the agency that received the dossier.
    #[default]
    Agency,
    Procedure,
}

/// Submission days to count, inclusive, in Vietnam's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Period {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl Period {
    /// Parse `from`/`to` (`YYYY-MM-DD`, either may be empty); `XALO-OFFICE-010` for a bad
    /// date or a period that ends before it starts.
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Period, Error> {
        let date = |name: &str, v: Option<&str>| -> Result<Option<NaiveDate>, Error> {
            match v.map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .map(Some)
                    .map_err(|_| {
                        Error::new(
                            ErrorCode::OfficeKpiQuery,
                            format!("{name} {v:?}: expected a date as YYYY-MM-DD"),
                        )
                    }),
            }
        };
        let p = Period {
            from: date("from", from)?,
            to: date("to", to)?,
        };
        if let (Some(f), Some(t)) = (p.from, p.to)
            && t < f
        {
            return Err(Error::new(
                ErrorCode::OfficeKpiQuery,
                "the period ends before it starts",
            ));
        }
        Ok(p)
    }

    /// The Unix range `[start, end)` the period covers.
    fn bounds(&self) -> (i64, i64) {
        let tz = crate::payment::vietnam();
        let start = |d: NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .and_then(|t| t.and_local_timezone(tz).single())
                .map(|t| t.timestamp())
        };
        let from = self.from.and_then(start).unwrap_or(i64::MIN);
        let to = self
            .to
            .and_then(|d| d.succ_opt())
            .and_then(start)
            .unwrap_or(i64::MAX);
        (from, to)
    }
}

/// The indicators of one agency or procedure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Indicators {
    /// The agency or procedure code; `*` for the total.
    pub key: String,
    pub name: Text,
    /// Dossiers submitted in the period.
    pub received: u64,
    pub online: u64,
    /// `online / received`, 0 to 1.
    pub online_share: Option<f64>,
    /// Approved or rejected.
    pub decided: u64,
    /// Decided dossiers that had a due date, and those of them decided by it.
    pub decided_with_due: u64,
    pub on_time: u64,
    /// `on_time / decided_with_due`, 0 to 1.
    pub on_time_rate: Option<f64>,
    /// Still open after their due date.
    pub overdue_open: u64,
    /// Mean working days from submission to decision.
    pub average_processing_days: Option<f64>,
    pub rated: u64,
    /// Mean rating, 1 to 5.
    pub satisfaction: Option<f64>,
}

#[derive(Default)]
struct Tally {
    received: u64,
    online: u64,
    decided: u64,
    decided_with_due: u64,
    on_time: u64,
    overdue_open: u64,
    processing_days: u64,
    processing_counted: u64,
    rated: u64,
    rating_sum: u64,
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

impl Tally {
    fn finish(&self, key: String, name: Text) -> Indicators {
        Indicators {
            key,
            name,
            received: self.received,
            online: self.online,
            online_share: ratio(self.online, self.received),
            decided: self.decided,
            decided_with_due: self.decided_with_due,
            on_time: self.on_time,
            on_time_rate: ratio(self.on_time, self.decided_with_due),
            overdue_open: self.overdue_open,
            average_processing_days: ratio(self.processing_days, self.processing_counted),
            rated: self.rated,
            satisfaction: ratio(self.rating_sum, self.rated),
        }
    }
}

/// A report: one row per agency or procedure with dossiers, and the total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub group: Group,
    pub period: Period,
    pub rows: Vec<Indicators>,
    pub total: Indicators,
}

fn day_in_vietnam(unix: i64) -> Option<NaiveDate> {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.with_timezone(&crate::payment::vietnam()).date_naive())
}

/// Compute the indicators from the dossiers submitted in `period`, as of `now_unix`.
pub async fn compute(
    db: &Database,
    calendar: &Calendar,
    group: Group,
    period: Period,
    now_unix: i64,
) -> Result<Report, Error> {
    let (from, to) = period.bounds();
    let rows = xalo_store::sqlx::query(
        "SELECT agency, procedure_code, channel, state, submitted_unix, due_unix, \
         finished_unix, rating FROM portal_dossier \
         WHERE submitted_unix IS NOT NULL AND submitted_unix >= $1 AND submitted_unix < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db.pool())
    .await
    .db("reading dossiers for the indicators")?;
    let c = "reading dossiers for the indicators";
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut total = Tally::default();
    for row in &rows {
        let agency: String = row.try_get("agency").db(c)?;
        let procedure: String = row.try_get("procedure_code").db(c)?;
        let channel: String = row.try_get("channel").db(c)?;
        let state: String = row.try_get("state").db(c)?;
        let submitted: i64 = row.try_get("submitted_unix").db(c)?;
        let due: Option<i64> = row.try_get("due_unix").db(c)?;
        let finished: Option<i64> = row.try_get("finished_unix").db(c)?;
        let rating: Option<i64> = row.try_get("rating").db(c)?;
        let key = match group {
            Group::Agency => agency,
            Group::Procedure => procedure,
        };
        let decided = matches!(state.as_str(), "approved" | "rejected");
        let open = matches!(
            state.as_str(),
            "submitted" | "processing" | "supplement_requested"
        );
        let days = match (decided, finished) {
            (true, Some(done)) => match (day_in_vietnam(submitted), day_in_vietnam(done)) {
                (Some(a), Some(b)) => calendar.working_days_between(a, b).ok(),
                _ => None,
            },
            _ => None,
        };
        for t in [tallies.entry(key).or_default(), &mut total] {
            t.received += 1;
            if channel == "online" {
                t.online += 1;
            }
            if decided {
                t.decided += 1;
                if let (Some(due), Some(done)) = (due, finished) {
                    t.decided_with_due += 1;
                    if done <= due {
                        t.on_time += 1;
                    }
                }
                if let Some(d) = days {
                    t.processing_days += u64::from(d);
                    t.processing_counted += 1;
                }
                if let Some(r) = rating.filter(|r| (1..=5).contains(r)) {
                    t.rated += 1;
                    t.rating_sum += r as u64;
                }
            }
            if open && due.is_some_and(|due| now_unix > due) {
                t.overdue_open += 1;
            }
        }
    }
    let cat = catalogue::catalogue()?;
    let name_of = |key: &str| -> Text {
        match group {
            Group::Agency => cat
                .agency(key)
                .map(|a| a.name.clone())
                .unwrap_or_else(|| Text {
                    vi: key.to_owned(),
                    en: key.to_owned(),
                }),
            Group::Procedure => cat
                .get(key)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| Text {
                    vi: key.to_owned(),
                    en: key.to_owned(),
                }),
        }
    };
    Ok(Report {
        group,
        period,
        rows: tallies
            .iter()
            .map(|(k, t)| t.finish(k.clone(), name_of(k)))
            .collect(),
        total: total.finish(
            "*".into(),
            Text {
                vi: "Tổng cộng".into(),
                en: "Total".into(),
            },
        ),
    })
}

// ---------------------------------------------------------------------------------------
// Page and JSON.

xalo_web::catalogue! {
    /// Texts of the indicator page.
    pub struct KpiText {
        title: "Chỉ số phục vụ người dân, doanh nghiệp" / "Service indicators",
        intro: "Theo Quyết định 766/QĐ-TTg: tỷ lệ hồ sơ trực tuyến, tỷ lệ giải quyết đúng hạn, thời gian xử lý trung bình và mức độ hài lòng." / "As Decision 766/QĐ-TTg measures them: the share of dossiers submitted online, the on-time rate, the average processing time and satisfaction.",
        group: "Nhóm theo" / "Group by",
        by_agency: "Cơ quan" / "Agency",
        by_procedure: "Thủ tục" / "Procedure",
        from: "Từ ngày" / "From",
        to: "Đến ngày" / "To",
        show: "Xem" / "Show",
        name: "Tên" / "Name",
        received: "Hồ sơ tiếp nhận" / "Dossiers received",
        online_share: "Tỷ lệ trực tuyến" / "Submitted online",
        on_time_rate: "Đúng hạn" / "On time",
        overdue_open: "Đang quá hạn" / "Open and overdue",
        average_days: "Thời gian xử lý TB (ngày làm việc)" / "Average processing (working days)",
        satisfaction: "Mức độ hài lòng (1–5)" / "Satisfaction (1–5)",
        none: "Chưa có hồ sơ trong kỳ này." / "No dossiers in this period.",
        json: "Dữ liệu JSON" / "As JSON",
    }
}

/// The query of the page and the JSON.
#[derive(Debug, Default, Deserialize)]
pub struct KpiQuery {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

impl KpiQuery {
    fn parse(&self) -> Result<(Group, Period), Error> {
        let group = match self.group.as_deref().map(str::trim) {
            None | Some("") | Some("agency") => Group::Agency,
            Some("procedure") => Group::Procedure,
            Some(other) => {
                return Err(Error::new(
                    ErrorCode::OfficeKpiQuery,
                    format!("group {other:?}: expected agency or procedure"),
                ));
            }
        };
        Ok((
            group,
            Period::parse(self.from.as_deref(), self.to.as_deref())?,
        ))
    }
}

#[derive(Clone)]
struct KpiState {
    db: Database,
    calendar: Calendar,
}

/// The public indicator routes: `GET /kpi` (inside the session layer, for the language)
/// and `GET /api/kpi`.
pub fn routes<S: Clone + Send + Sync + 'static>(db: Database, calendar: Calendar) -> Router<S> {
    Router::new()
        .route("/kpi", get(page))
        .route("/api/kpi", get(json))
        .with_state(KpiState { db, calendar })
}

async fn json(State(s): State<KpiState>, Query(q): Query<KpiQuery>) -> Result<Response, Error> {
    let (group, period) = q.parse()?;
    let report = compute(
        &s.db,
        &s.calendar,
        group,
        period,
        crate::dossier::unix_now(),
    )
    .await?;
    Ok(Json(report).into_response())
}

struct RowView {
    key: String,
    name: String,
    received: u64,
    online_share: String,
    on_time_rate: String,
    overdue_open: u64,
    average_days: String,
    satisfaction: String,
}

#[derive(Template)]
#[template(path = "kpi.html")]
struct KpiTemplate<'a> {
    t: &'static KpiText,
    by_procedure: bool,
    from: &'a str,
    to: &'a str,
    rows: Vec<RowView>,
    total: RowView,
    json_href: String,
}

fn percent(v: Option<f64>, lang: Lang) -> String {
    match v {
        None => "–".into(),
        Some(v) => number(v * 100.0, lang) + " %",
    }
}

fn number(v: f64, lang: Lang) -> String {
    let s = format!("{v:.1}");
    match lang {
        Lang::Vi => s.replace('.', ","),
        Lang::En => s,
    }
}

fn view(i: &Indicators, lang: Lang) -> RowView {
    RowView {
        key: i.key.clone(),
        name: i.name.get(lang).to_owned(),
        received: i.received,
        online_share: percent(i.online_share, lang),
        on_time_rate: percent(i.on_time_rate, lang),
        overdue_open: i.overdue_open,
        average_days: i
            .average_processing_days
            .map(|v| number(v, lang))
            .unwrap_or_else(|| "–".into()),
        satisfaction: i
            .satisfaction
            .map(|v| number(v, lang))
            .unwrap_or_else(|| "–".into()),
    }
}

async fn page(
    State(s): State<KpiState>,
    Extension(session): Extension<Session>,
    uri: Uri,
    Query(q): Query<KpiQuery>,
) -> Result<Html<String>, Error> {
    let lang = session.lang;
    let t = KpiText::get(lang);
    let (group, period) = q.parse()?;
    let report = compute(
        &s.db,
        &s.calendar,
        group,
        period,
        crate::dossier::unix_now(),
    )
    .await?;
    let from = q.from.as_deref().unwrap_or("");
    let to = q.to.as_deref().unwrap_or("");
    let body = KpiTemplate {
        t,
        by_procedure: group == Group::Procedure,
        from,
        to,
        rows: report.rows.iter().map(|i| view(i, lang)).collect(),
        total: view(&report.total, lang),
        json_href: format!(
            "/api/kpi?group={}&from={}&to={}",
            if group == Group::Procedure {
                "procedure"
            } else {
                "agency"
            },
            period.from.map(|d| d.to_string()).unwrap_or_default(),
            period.to.map(|d| d.to_string()).unwrap_or_default()
        ),
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    xalo_web::html(&Page {
        lang,
        title: t.title,
        uri: &uri,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let p = Period::parse(Some("2026-01-01"), Some("2026-01-31")).unwrap();
        let (a, b) = p.bounds();
        // 1 January 2026 00:00 in Vietnam is 31 December 2025 17:00 UTC.
        assert_eq!(a, 1_767_200_400);
        assert_eq!(b - a, 31 * 86_400);
        assert_eq!(Period::parse(None, Some("")).unwrap(), Period::default());
        assert_eq!(
            Period::parse(Some("2026-13-01"), None).unwrap_err().code,
            ErrorCode::OfficeKpiQuery
        );
        assert!(Period::parse(Some("2026-02-01"), Some("2026-01-01")).is_err());
        let q = KpiQuery {
            group: Some("ministry".into()),
            ..KpiQuery::default()
        };
        assert!(q.parse().is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(percent(Some(0.875), Lang::Vi), "87,5 %");
        assert_eq!(percent(Some(0.875), Lang::En), "87.5 %");
        assert_eq!(percent(None, Lang::En), "–");
    }
}
