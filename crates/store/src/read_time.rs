//! Reading timestamp columns. SQLite keeps a timestamp as text, and Diesel reads it by trying up
//! to eighteen formats in turn with `time`'s general parser: a whole-second value fails the
//! first two before the third matches. The text this store writes (Diesel's own
//! `YYYY-MM-DD HH:MM:SS` with an optional fraction) is read here by hand; anything else, and
//! every PostgreSQL value, goes to Diesel's reader.
//!
//! A row field keeps its `PrimitiveDateTime` type and names the reader:
//! `#[diesel(deserialize_as = ReadTime)]`, or [`ReadTimeOpt`] for a nullable column.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::pg::Pg;
use diesel::sql_types::{Nullable, Timestamp};
use diesel::sqlite::Sqlite;
use time::{Date, Month, PrimitiveDateTime, Time};

/// A timestamp column's value.
#[derive(Debug, Clone, Copy, FromSqlRow)]
pub(crate) struct ReadTime(PrimitiveDateTime);

impl From<ReadTime> for PrimitiveDateTime {
    fn from(t: ReadTime) -> Self {
        t.0
    }
}

impl FromSql<Timestamp, Sqlite> for ReadTime {
    fn from_sql(mut value: <Sqlite as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        if let Some(t) = parse_stored(value.read_text().as_bytes()) {
            return Ok(Self(t));
        }
        <PrimitiveDateTime as FromSql<Timestamp, Sqlite>>::from_sql(value).map(Self)
    }
}

impl FromSql<Timestamp, Pg> for ReadTime {
    fn from_sql(value: <Pg as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        <PrimitiveDateTime as FromSql<Timestamp, Pg>>::from_sql(value).map(Self)
    }
}

/// A nullable timestamp column's value.
#[derive(Debug, Clone, Copy, FromSqlRow)]
pub(crate) struct ReadTimeOpt(Option<PrimitiveDateTime>);

impl From<ReadTimeOpt> for Option<PrimitiveDateTime> {
    fn from(t: ReadTimeOpt) -> Self {
        t.0
    }
}

impl<DB> FromSql<Nullable<Timestamp>, DB> for ReadTimeOpt
where
    DB: Backend,
    ReadTime: FromSql<Timestamp, DB>,
{
    fn from_sql(value: DB::RawValue<'_>) -> deserialize::Result<Self> {
        ReadTime::from_sql(value).map(|t| Self(Some(t.0)))
    }

    fn from_nullable_sql(value: Option<DB::RawValue<'_>>) -> deserialize::Result<Self> {
        match value {
            Some(value) => Self::from_sql(value),
            None => Ok(Self(None)),
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS`, then nothing or a fraction of one to nine digits: the text Diesel
/// writes for a `PrimitiveDateTime` on SQLite. `None` for any other text, or an invalid date or
/// time.
fn parse_stored(text: &[u8]) -> Option<PrimitiveDateTime> {
    let (head, fraction) = text.split_at_checked(19)?;
    let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b' ',
        h0,
        h1,
        b':',
        i0,
        i1,
        b':',
        s0,
        s1,
    ] = *head
    else {
        return None;
    };
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0_u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let nanos = match fraction {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            number(digits)? * 10_u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let small = |digits: [u8; 2]| number(&digits).and_then(|n| u8::try_from(n).ok());
    let year = i32::try_from(number(&[y0, y1, y2, y3])?).ok()?;
    let month = Month::try_from(small([m0, m1])?).ok()?;
    let date = Date::from_calendar_date(year, month, small([d0, d1])?).ok()?;
    let time =
        Time::from_hms_nano(small([h0, h1])?, small([i0, i1])?, small([s0, s1])?, nanos).ok()?;
    Some(PrimitiveDateTime::new(date, time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::prelude::*;
    use diesel::sql_types::Text;
    use time::macros::datetime;

    /// One value read three ways: by Diesel itself, and by [`ReadTime`] and [`ReadTimeOpt`].
    #[derive(QueryableByName)]
    struct Both {
        #[diesel(sql_type = Timestamp)]
        diesel: PrimitiveDateTime,
        #[diesel(sql_type = Timestamp, deserialize_as = ReadTime)]
        ours: PrimitiveDateTime,
        #[diesel(sql_type = Nullable<Timestamp>, deserialize_as = ReadTimeOpt)]
        ours_opt: Option<PrimitiveDateTime>,
    }

    /// A value read by [`ReadTime`] alone.
    #[derive(QueryableByName)]
    struct Ours {
        #[diesel(sql_type = Timestamp, deserialize_as = ReadTime)]
        at: PrimitiveDateTime,
    }

    /// The SQL expression `value` (in which `?1` is `text`, when given) read by [`Both`] through
    /// a real SQLite connection: Diesel's reading, then ours.
    fn read_both(
        conn: &mut SqliteConnection,
        value: &str,
        text: Option<&str>,
    ) -> (PrimitiveDateTime, PrimitiveDateTime) {
        let sql = format!("SELECT {value} AS diesel, {value} AS ours, {value} AS ours_opt");
        let query = diesel::sql_query(sql).into_boxed::<Sqlite>();
        let query = match text {
            Some(text) => query.bind::<Text, _>(text.to_owned()),
            None => query,
        };
        let both: Both = query.get_result(conn).expect("read back");
        assert_eq!(both.ours_opt, Some(both.ours), "{value} {text:?}");
        (both.diesel, both.ours)
    }

    #[test]
    fn reads_what_diesel_reads() {
        let mut conn = SqliteConnection::establish(":memory:").expect("sqlite");
        for text in [
            "2026-12-08 10:11:12",
            "2026-12-08 10:11:12.5",
            "2026-12-08 10:11:12.123456",
            "2026-12-08 10:11:12.123456789",
            "2024-02-29 23:59:59.999999",
            "0001-01-01 00:00:00",
            "9999-12-31 23:59:59.000001",
            // Not this store's form: Diesel's reader takes them.
            "2026-12-08T10:11:12",
            "2026-12-08 10:11",
            "2026-12-08 10:11:12Z",
            "2026-12-08 10:11:12+02:00",
            "2461018.5",
        ] {
            let (diesel, ours) = read_both(&mut conn, "?1", Some(text));
            assert_eq!(ours, diesel, "{text}");
        }
    }

    #[test]
    fn a_stored_number_and_bad_text_read_as_diesel_reads_them() {
        let mut conn = SqliteConnection::establish(":memory:").expect("sqlite");
        // A julian day stored as a number, not as text.
        let (diesel, ours) = read_both(&mut conn, "2461041.5", None);
        assert_eq!(ours, diesel);
        assert_eq!(ours, datetime!(2026-01-01 00:00:00));
        for bad in ["2026-02-30 10:11:12", "2026-12-08 10:11:12.", "not a time"] {
            let read = diesel::sql_query("SELECT ?1 AS at")
                .bind::<Text, _>(bad)
                .get_result::<Ours>(&mut conn);
            assert!(read.is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_what_this_store_writes() {
        let mut conn = SqliteConnection::establish(":memory:").expect("sqlite");
        for at in [
            datetime!(2026-12-08 10:11:12),
            datetime!(2026-12-08 10:11:12.000_001),
            datetime!(2026-12-08 10:11:12.654_321),
            datetime!(1999-12-31 23:59:59.5),
        ] {
            let read: Ours = diesel::sql_query("SELECT ?1 AS at")
                .bind::<Timestamp, _>(at)
                .get_result(&mut conn)
                .expect("read back");
            assert_eq!(read.at, at);
        }
    }

    #[test]
    fn leaves_other_text_to_diesel() {
        for text in [
            "",
            "2026-12-08",
            "2026-12-08T10:11:12",
            "2026-12-08 10:11:12.",
            "2026-12-08 10:11:12.1234567890",
            "2026-12-08 10:11:12Z",
            "2026-13-08 10:11:12",
            "2026-02-30 10:11:12",
            "2026-12-08 24:00:00",
            "2026-12-08 10:60:00",
            "2026-12-08 1a:11:12",
            "+026-12-08 10:11:12",
        ] {
            assert_eq!(parse_stored(text.as_bytes()), None, "{text}");
        }
        assert_eq!(
            parse_stored(b"2026-12-08 10:11:12.25"),
            Some(datetime!(2026-12-08 10:11:12.25))
        );
    }

    #[test]
    fn a_null_column_reads_as_none() {
        #[derive(QueryableByName)]
        struct Nothing {
            #[diesel(sql_type = Nullable<Timestamp>, deserialize_as = ReadTimeOpt)]
            at: Option<PrimitiveDateTime>,
        }
        let mut conn = SqliteConnection::establish(":memory:").expect("sqlite");
        let read: Nothing = diesel::sql_query("SELECT NULL AS at")
            .get_result(&mut conn)
            .expect("read back");
        assert_eq!(read.at, None);
    }
}
