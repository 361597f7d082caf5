//! Working days in Vietnam, for legal processing deadlines.
//!
//! A procedure's processing time is counted in working days (Decree 61/2018, Decree
//! 107/2021). Saturdays and Sundays are not working days, nor are the public holidays of
//! the Labour Code 2019 (Article 112): New Year's Day (1/1), Tết (five days around the
//! lunar new year, the exact days set each year by the government), Hùng Kings'
//! Commemoration (10th day of the 3rd lunar month), Reunification Day (30/4), Labour Day
//! (1/5) and National Day (2/9 and one adjacent day). A holiday on a weekend is taken on
//! the next working day (Article 112(3)). The government may also swap a working day next
//! to a holiday with a Saturday, which then becomes a working day.
//!
//! Tết and Hùng Kings' day follow the Vietnamese lunar calendar (UTC+7, which sometimes
//! differs from the Chinese one: Tết 2030 is 2 February in Vietnam, 3 February in China),
//! so their Gregorian dates are kept in [`LUNAR`], computed with Hồ Ngọc Đức's published
//! algorithm for the Vietnamese lunar calendar and checked against the official
//! announcements of the Ministry of Labour, Invalids and Social Affairs (since 2025 the
//! Ministry of Home Affairs) for 2024–2026. Years whose holidays the government has
//! announced are in [`DECIDED`]; later years follow the default rule (the last day of the
//! lunar year and the first four of the new one, weekend days carried to the next working
//! days) until their announcement is added here.

use std::collections::BTreeSet;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use xalo_core::{Error, ErrorCode};

/// Vietnam's offset from UTC in seconds (no daylight saving).
const VIETNAM_OFFSET: i64 = 7 * 3600;

/// First and last year the calendar knows.
pub const FIRST_YEAR: i32 = 2024;
pub const LAST_YEAR: i32 = 2035;

/// A Gregorian `(month, day)`.
type MonthDay = (u32, u32);

/// `(year, lunar new year's day (Tết, mùng 1), Hùng Kings' day (10/3 lunar))` in that
/// Gregorian year.
const LUNAR: &[(i32, MonthDay, MonthDay)] = &[
    (2024, (2, 10), (4, 18)),
    (2025, (1, 29), (4, 7)),
    (2026, (2, 17), (4, 26)),
    (2027, (2, 6), (4, 16)),
    (2028, (1, 26), (4, 4)),
    (2029, (2, 13), (4, 23)),
    (2030, (2, 2), (4, 12)),
    (2031, (1, 23), (4, 1)),
    (2032, (2, 11), (4, 19)),
    (2033, (1, 31), (4, 9)),
    (2034, (2, 19), (4, 28)),
    (2035, (2, 8), (4, 17)),
];

/// A year whose days off the government announced: every weekday off (holidays,
/// carried-over days and swapped days) and the Saturdays worked in exchange.
struct Decided {
    year: i32,
    days_off: &'static [MonthDay],
    saturdays_worked: &'static [MonthDay],
}

const DECIDED: &[Decided] = &[
    // Announcement 5711/TB-LĐTBXH (2023): Tết 8–14/2 (29 Chạp to mùng 5, the weekend of
    // mùng 1–2 carried over); 29/4 swapped with Saturday 4/5; 2/9 with Tuesday 3/9.
    Decided {
        year: 2024,
        days_off: &[
            (1, 1),
            (2, 8),
            (2, 9),
            (2, 12),
            (2, 13),
            (2, 14),
            (4, 18),
            (4, 29),
            (4, 30),
            (5, 1),
            (9, 2),
            (9, 3),
        ],
        saturdays_worked: &[(5, 4)],
    },
    // Announcement 6150/TB-LĐTBXH (2024): Tết 25/1–2/2, Monday 27/1 swapped with Saturday
    // 8/2; Friday 2/5 swapped with Saturday 26/4; 2/9 with Monday 1/9.
    Decided {
        year: 2025,
        days_off: &[
            (1, 1),
            (1, 27),
            (1, 28),
            (1, 29),
            (1, 30),
            (1, 31),
            (4, 7),
            (4, 30),
            (5, 1),
            (5, 2),
            (9, 1),
            (9, 2),
        ],
        saturdays_worked: &[(2, 8), (4, 26)],
    },
];

fn date(year: i32, (month, day): MonthDay) -> Result<NaiveDate, Error> {
    NaiveDate::from_ymd_opt(year, month, day).ok_or_else(|| {
        Error::new(
            ErrorCode::Internal,
            format!("holiday table names an impossible date {year}-{month}-{day}"),
        )
    })
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// The days off and Saturdays worked of one year.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YearHolidays {
    pub year: i32,
    /// Weekdays (Monday–Friday) that are not working days.
    pub days_off: BTreeSet<NaiveDate>,
    /// Saturdays that are working days.
    pub saturdays_worked: BTreeSet<NaiveDate>,
    /// Whether the days come from the government's announcement rather than the rule.
    pub announced: bool,
}

impl YearHolidays {
    /// The holidays of `year`, or `XALO-OFFICE-001` outside [`FIRST_YEAR`]..=[`LAST_YEAR`].
    pub fn of(year: i32) -> Result<YearHolidays, Error> {
        if let Some(d) = DECIDED.iter().find(|d| d.year == year) {
            return Ok(YearHolidays {
                year,
                days_off: d
                    .days_off
                    .iter()
                    .map(|md| date(year, *md))
                    .collect::<Result<_, _>>()?,
                saturdays_worked: d
                    .saturdays_worked
                    .iter()
                    .map(|md| date(year, *md))
                    .collect::<Result<_, _>>()?,
                announced: true,
            });
        }
        let (_, tet, hung) = LUNAR
            .iter()
            .find(|(y, _, _)| *y == year)
            .copied()
            .ok_or_else(|| out_of_range(year))?;
        let tet = date(year, tet)?;
        let mut holidays = vec![date(year, (1, 1))?];
        // The last day of the lunar year and the first four of the new one.
        holidays.extend((-1..=3).map(|i| tet + Duration::days(i)));
        holidays.push(date(year, hung)?);
        holidays.push(date(year, (4, 30))?);
        holidays.push(date(year, (5, 1))?);
        let national = date(year, (9, 2))?;
        holidays.push(national);
        // The adjacent day joins National Day to the nearer weekend.
        holidays.push(match national.weekday() {
            Weekday::Tue | Weekday::Fri | Weekday::Sat => national - Duration::days(1),
            _ => national + Duration::days(1),
        });
        holidays.sort();
        holidays.dedup();
        let mut days_off = BTreeSet::new();
        let mut carried = 0usize;
        for day in &holidays {
            if is_weekend(*day) {
                carried += 1;
            } else {
                days_off.insert(*day);
            }
            // A weekend holiday is taken on the next working day after the holiday run.
            let next = *day + Duration::days(1);
            if carried > 0 && !holidays.contains(&next) {
                let mut d = next;
                while carried > 0 {
                    if !is_weekend(d) && !days_off.contains(&d) && !holidays.contains(&d) {
                        days_off.insert(d);
                        carried -= 1;
                    }
                    d += Duration::days(1);
                }
            }
        }
        Ok(YearHolidays {
            year,
            days_off,
            saturdays_worked: BTreeSet::new(),
            announced: false,
        })
    }
}

fn out_of_range(year: i32) -> Error {
    Error::new(
        ErrorCode::OfficeCalendarRange,
        format!("the holiday calendar covers {FIRST_YEAR}–{LAST_YEAR}, not {year}"),
    )
}

/// Vietnam's working-day calendar for [`FIRST_YEAR`]..=[`LAST_YEAR`], built once.
#[derive(Debug, Clone)]
pub struct Calendar {
    years: Vec<YearHolidays>,
}

impl Calendar {
    pub fn vietnam() -> Result<Calendar, Error> {
        Ok(Calendar {
            years: (FIRST_YEAR..=LAST_YEAR)
                .map(YearHolidays::of)
                .collect::<Result<_, _>>()?,
        })
    }

    fn year(&self, year: i32) -> Result<&YearHolidays, Error> {
        self.years
            .iter()
            .find(|y| y.year == year)
            .ok_or_else(|| out_of_range(year))
    }

    /// Whether `d` is a working day for public administration.
    pub fn is_working_day(&self, d: NaiveDate) -> Result<bool, Error> {
        let y = self.year(d.year())?;
        Ok(if is_weekend(d) {
            y.saturdays_worked.contains(&d)
        } else {
            !y.days_off.contains(&d)
        })
    }

    /// The day on which `n` working days after `start` have passed: `start` itself does not
    /// count (a dossier received on a Friday with one working day is due on Monday), and
    /// `n = 0` gives `start`.
    pub fn add_working_days(&self, start: NaiveDate, n: u32) -> Result<NaiveDate, Error> {
        let mut d = start;
        let mut left = n;
        while left > 0 {
            d = d
                .succ_opt()
                .ok_or_else(|| out_of_range(LAST_YEAR.saturating_add(1)))?;
            if self.is_working_day(d)? {
                left -= 1;
            }
        }
        Ok(d)
    }

    /// The end (23:59:59 in Vietnam, as a Unix time) of the day `n` working days after the
    /// day in Vietnam of `start_unix`: a deadline that is met all through its last day.
    pub fn due_end_of_day(&self, start_unix: i64, n: u32) -> Result<i64, Error> {
        let start = chrono::DateTime::from_timestamp(start_unix.saturating_add(VIETNAM_OFFSET), 0)
            .map(|t| t.date_naive())
            .ok_or_else(|| out_of_range(LAST_YEAR.saturating_add(1)))?;
        let due = self.add_working_days(start, n)?;
        let end = due
            .and_hms_opt(23, 59, 59)
            .map(|t| t.and_utc().timestamp())
            .ok_or_else(|| out_of_range(due.year()))?;
        Ok(end - VIETNAM_OFFSET)
    }

    /// Working days in `(from, to]`: how many working days passed from `from` to `to`, so
    /// that `add_working_days(from, working_days_between(from, to)) <= to`. Zero when `to`
    /// is not after `from`.
    pub fn working_days_between(&self, from: NaiveDate, to: NaiveDate) -> Result<u32, Error> {
        let mut n = 0u32;
        let mut d = from;
        while d < to {
            d = d
                .succ_opt()
                .ok_or_else(|| out_of_range(LAST_YEAR.saturating_add(1)))?;
            if self.is_working_day(d)? {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn every_year_of_the_table_builds() {
        let cal = Calendar::vietnam().unwrap();
        for y in FIRST_YEAR..=LAST_YEAR {
            let h = YearHolidays::of(y).unwrap();
            // Eleven days off in a year (1 + 5 + 1 + 1 + 1 + 2), plus any swapped day.
            assert!(h.days_off.len() >= 11, "{y}: {:?}", h.days_off);
            assert!(h.days_off.iter().all(|d| !is_weekend(*d)));
            assert!(!cal.is_working_day(d(y, 1, 1)).unwrap() || is_weekend(d(y, 1, 1)));
        }
    }

    #[test]
    fn tet_2025_and_the_swapped_saturday() {
        let cal = Calendar::vietnam().unwrap();
        // Friday 24/1 is the last working day before Tết; Monday 3/2 the first after it.
        assert!(cal.is_working_day(d(2025, 1, 24)).unwrap());
        for day in 25..=31 {
            assert!(!cal.is_working_day(d(2025, 1, day)).unwrap(), "{day}");
        }
        assert!(!cal.is_working_day(d(2025, 2, 2)).unwrap());
        assert_eq!(
            cal.add_working_days(d(2025, 1, 24), 1).unwrap(),
            d(2025, 2, 3)
        );
        // Saturday 8/2 was worked in exchange for Monday 27/1.
        assert!(cal.is_working_day(d(2025, 2, 8)).unwrap());
        assert!(!cal.is_working_day(d(2025, 2, 15)).unwrap());
        assert_eq!(
            cal.add_working_days(d(2025, 2, 7), 1).unwrap(),
            d(2025, 2, 8)
        );
    }

    #[test]
    fn reunification_and_labour_day_2025() {
        let cal = Calendar::vietnam().unwrap();
        // Tuesday 29/4 + 1 working day skips 30/4–4/5 and lands on Monday 5/5.
        assert_eq!(
            cal.add_working_days(d(2025, 4, 29), 1).unwrap(),
            d(2025, 5, 5)
        );
        assert!(cal.is_working_day(d(2025, 4, 26)).unwrap());
        assert!(!cal.is_working_day(d(2025, 4, 7)).unwrap());
        assert!(!cal.is_working_day(d(2025, 9, 1)).unwrap());
        assert!(!cal.is_working_day(d(2025, 9, 2)).unwrap());
        assert!(cal.is_working_day(d(2025, 9, 3)).unwrap());
    }

    #[test]
    fn year_2024_from_the_announcement() {
        let cal = Calendar::vietnam().unwrap();
        assert!(!cal.is_working_day(d(2024, 2, 8)).unwrap());
        assert!(!cal.is_working_day(d(2024, 2, 14)).unwrap());
        assert!(cal.is_working_day(d(2024, 2, 15)).unwrap());
        assert!(!cal.is_working_day(d(2024, 4, 18)).unwrap());
        assert!(cal.is_working_day(d(2024, 5, 4)).unwrap());
        assert!(!cal.is_working_day(d(2024, 9, 3)).unwrap());
    }

    #[test]
    fn rule_years_carry_weekend_holidays() {
        let cal = Calendar::vietnam().unwrap();
        // 2026: Tết 16–20/2 (Monday–Friday) around mùng 1 on Tuesday 17/2.
        for day in 16..=20 {
            assert!(!cal.is_working_day(d(2026, 2, day)).unwrap(), "{day}");
        }
        assert!(cal.is_working_day(d(2026, 2, 23)).unwrap());
        // Hùng Kings' day 2026 is Sunday 26/4: taken on Monday 27/4.
        assert!(!cal.is_working_day(d(2026, 4, 27)).unwrap());
        assert!(cal.is_working_day(d(2026, 4, 28)).unwrap());
        assert!(!cal.is_working_day(d(2026, 4, 30)).unwrap());
        assert!(!cal.is_working_day(d(2026, 5, 1)).unwrap());
        // 2027: mùng 1 on Saturday 6/2: 5/2 to 9/2 with the weekend carried to 10–11/2.
        for day in [5, 8, 9, 10, 11] {
            assert!(!cal.is_working_day(d(2027, 2, day)).unwrap(), "{day}");
        }
        assert!(cal.is_working_day(d(2027, 2, 12)).unwrap());
        // Tết 2030 follows the Vietnamese lunar calendar: mùng 1 is Saturday 2/2.
        assert!(!cal.is_working_day(d(2030, 2, 1)).unwrap());
        assert!(!cal.is_working_day(d(2030, 2, 4)).unwrap());
    }

    #[test]
    fn counting_working_days() {
        let cal = Calendar::vietnam().unwrap();
        // A plain week: Monday 10/3/2025 + 5 working days is Monday 17/3.
        assert_eq!(
            cal.add_working_days(d(2025, 3, 10), 5).unwrap(),
            d(2025, 3, 17)
        );
        assert_eq!(
            cal.add_working_days(d(2025, 3, 10), 0).unwrap(),
            d(2025, 3, 10)
        );
        assert_eq!(
            cal.working_days_between(d(2025, 3, 10), d(2025, 3, 17))
                .unwrap(),
            5
        );
        assert_eq!(
            cal.working_days_between(d(2025, 3, 17), d(2025, 3, 10))
                .unwrap(),
            0
        );
        // Across New Year 2026 (Thursday 1/1 off): 31/12/2025 + 2 = Monday 5/1/2026.
        assert_eq!(
            cal.add_working_days(d(2025, 12, 31), 2).unwrap(),
            d(2026, 1, 5)
        );
        // Round trip over Tết 2025.
        let start = d(2025, 1, 20);
        for n in 0..30 {
            let end = cal.add_working_days(start, n).unwrap();
            assert_eq!(cal.working_days_between(start, end).unwrap(), n);
        }
        // Deadlines end with their day in Vietnam: submitted Friday 7/3/2025 10:00 (03:00
        // UTC) with 1 working day, due Monday 10/3 23:59:59 (16:59:59 UTC).
        assert_eq!(cal.due_end_of_day(1_741_316_400, 1).unwrap(), 1_741_625_999);
        // Outside the table: a coded error, not a guess.
        let err = cal.add_working_days(d(2035, 12, 28), 10).unwrap_err();
        assert_eq!(err.code, ErrorCode::OfficeCalendarRange);
        assert!(cal.is_working_day(d(2023, 6, 1)).is_err());
    }
}
