//! The JSON body extractor of every API route: the body must be one JSON object, read by field
//! name. (actix's own `Json` would let serde read a struct from an array, field by position.)

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _, MapAccess, Visitor};
use tally_kernel::FieldError;

use crate::error::ApiError;

/// A request body that is a JSON object deserialized into `T`. The size limit, the Content-Type
/// check and their errors are `web::JsonConfig`'s; anything but an object is a validation error
/// on `body`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The request.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::Json::<Object<T>>::from_request(req, payload);
        Box::pin(async move { Ok(Json(body.await?.into_inner().0)) })
    }
}

/// `T` read from a JSON object only: a list (or any other value) is refused, and so is a field
/// given twice; unknown and missing fields are `T`'s own derived rule. A body with several bad
/// fields names every one it can (see [`read_fields`]).
#[derive(Debug)]
pub(crate) struct Object<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);

        impl<'de, T: DeserializeOwned> Visitor<'de> for Only<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
                let mut object = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if object.contains_key(&key) {
                        return Err(A::Error::custom(format!("duplicate field `{key}`")));
                    }
                    let value: serde_json::Value = map.next_value()?;
                    object.insert(key, value);
                }
                read_fields(object).map_err(A::Error::custom)
            }
        }

        deserializer.deserialize_map(Only(PhantomData)).map(Object)
    }
}

/// Most field errors one body is answered with.
const MAX_FIELD_ERRORS: usize = 32;

/// Marks a message that lists several field errors (as JSON), for [`body_error`].
const SEVERAL: &str = "several fields: ";

/// `T` from a body's fields. On an error, the field to blame is set aside and the rest read
/// again, so that every field of the wrong type, every unknown field and the first missing
/// one are named (a field inside a list or object stops the search within it at its first
/// problem). One problem keeps serde's own message, with the field's JSON path; several are
/// encoded for [`body_error`].
fn read_fields<T: DeserializeOwned>(
    object: serde_json::Map<String, serde_json::Value>,
) -> Result<T, String> {
    let mut body = serde_json::Value::Object(object);
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut first = None;
    while problems.len() < MAX_FIELD_ERRORS {
        let e = match serde_path_to_error::deserialize::<_, T>(&body) {
            Ok(read) if problems.is_empty() => return Ok(read),
            Ok(_) => break,
            Err(e) => e,
        };
        let path = e.path().to_string();
        let top = match e.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => Some(key.clone()),
            _ => None,
        };
        let inner = e.into_inner().to_string();
        let message = if path == "." {
            inner
        } else {
            format!("field `{path}`: {inner}")
        };
        let (field, text) = field_error(&message);
        if problems.iter().any(|(f, _)| *f == field) {
            // Required, and set aside for its own error: nothing more to learn.
            break;
        }
        problems.push((field, text));
        first.get_or_insert(message);
        let set_aside = match (&mut body, top) {
            (serde_json::Value::Object(fields), Some(key)) => fields.remove(&key).is_some(),
            _ => false,
        };
        if !set_aside {
            break;
        }
    }
    match problems.len() {
        1 => Err(first.unwrap_or_default()),
        _ => Err(format!(
            "{SEVERAL}{}",
            serde_json::to_string(&problems).unwrap_or_default()
        )),
    }
}

/// The answer to a body that could not be read: a `VALIDATION_ERROR` naming each field to
/// blame, or `body` itself when it is not JSON or not an object.
pub(crate) fn body_error(serde_message: &str) -> ApiError {
    if let Some(listed) = serde_message.strip_prefix(SEVERAL) {
        let json = match listed.rfind(" at line ") {
            Some(i) => &listed[..i],
            None => listed,
        };
        if let Ok(problems) = serde_json::from_str::<Vec<(String, String)>>(json) {
            return ApiError::fields(
                problems
                    .into_iter()
                    .map(|(field, message)| FieldError::new(field, message))
                    .collect(),
            );
        }
    }
    let (field, message) = field_error(serde_message);
    ApiError::validation(&field, message)
}

/// A body that could not be read into its request type, as `(field, message)` in plain words:
/// the field's JSON path (`amount`, `entitlements[0].included`, or `body` when no field is to
/// blame) and what it must be, without Rust's type names.
pub(crate) fn field_error(serde_message: &str) -> (String, String) {
    let message = match serde_message.rfind(" at line ") {
        Some(i) if serde_message[i..].contains(" column ") => &serde_message[..i],
        _ => serde_message,
    };
    if let Some((field, rest)) = message
        .strip_prefix("field `")
        .and_then(|m| m.split_once("`: "))
    {
        if is_syntax(rest) || field.contains('?') {
            // Malformed JSON is the body's fault, wherever the parser stopped.
            return ("body".to_owned(), format!("is not valid JSON: {rest}"));
        }
        return match field_error(rest) {
            // An unknown field's path already ends with it; a missing one is inside the path.
            (own, message) if own != "body" && !field.ends_with(own.as_str()) => {
                (format!("{field}.{own}"), message)
            }
            (_, message) => (field.to_owned(), message),
        };
    }
    if let Some((field, _)) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split_once('`'))
    {
        return (field.to_owned(), "is required".to_owned());
    }
    if let Some((field, rest)) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split_once('`'))
    {
        let expected = rest.strip_prefix(", ").unwrap_or("");
        return (
            field.to_owned(),
            format!("is not a field of this request ({expected})"),
        );
    }
    if is_syntax(message) {
        return ("body".to_owned(), format!("is not valid JSON: {message}"));
    }
    ("body".to_owned(), plain(message))
}

/// Whether serde_json's message is about the JSON text itself, not about a value in it.
fn is_syntax(message: &str) -> bool {
    const SYNTAX: &[&str] = &[
        "EOF while parsing",
        "expected ",
        "invalid escape",
        "invalid number",
        "number out of range",
        "invalid unicode",
        "control character",
        "key must be",
        "lone leading surrogate",
        "trailing ",
        "unexpected end",
        "recursion limit",
    ];
    SYNTAX.iter().any(|p| message.starts_with(p))
}

/// serde's "invalid type: string \"x\", expected i64" as "must be a whole number, not a string".
fn plain(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return match message.strip_prefix("invalid value: ") {
            Some(rest) => match rest.split_once(", expected ") {
                Some((got, expected)) => match got.strip_prefix("integer `") {
                    Some(value) => format!(
                        "must be {}; {} is out of range",
                        kind(expected),
                        value.trim_end_matches('`')
                    ),
                    None => format!("must be {}, not {}", kind(expected), got_kind(got)),
                },
                None => format!("has an invalid value: {rest}"),
            },
            None => message.to_owned(),
        };
    };
    match rest.split_once(", expected ") {
        Some((got, expected)) => format!("must be {}, not {}", kind(expected), got_kind(got)),
        None => message.to_owned(),
    }
}

/// What serde expected, in plain words.
fn kind(expected: &str) -> String {
    let expected = expected.trim();
    let words = match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number of 0 or more",
        "f32" | "f64" => "a number",
        "a string" | "a borrowed string" | "a character" => "a string",
        "a boolean" => "true or false",
        "a sequence" => "a list",
        "a map" | "a JSON object" => "a JSON object",
        _ if expected.starts_with("struct ") || expected.starts_with("a JSON object") => {
            "a JSON object"
        }
        _ => return expected.to_owned(),
    };
    words.to_owned()
}

/// What the body held, in plain words ("string \"x\"" is a string).
fn got_kind(got: &str) -> &'static str {
    match got.split([' ', '`']).next().unwrap_or("") {
        "string" => "a string",
        "integer" => "a number",
        "floating" => "a fractional number",
        "boolean" => "true or false",
        "null" => "null",
        "map" => "a JSON object",
        "sequence" => "a list",
        _ => "that",
    }
}

#[cfg(test)]
mod tests {
    use super::{Object, body_error, field_error};

    /// What a client is told for a body of `json` read into `T`.
    fn refusal<T: serde::de::DeserializeOwned>(json: &str) -> (String, String) {
        let e = serde_json::from_str::<Object<T>>(json).err().unwrap();
        field_error(&e.to_string())
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Request {
        user_id: String,
        amount: i64,
        #[serde(default)]
        lines: Vec<Line>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Line {
        included: u32,
    }

    #[test]
    fn a_field_error_names_the_field_by_path_in_plain_words() {
        let cases = [
            (
                r#"{"user_id": "a", "amount": "5"}"#,
                "amount",
                "must be a whole number, not a string",
            ),
            (
                r#"{"user_id": "a", "amount": 1.5}"#,
                "amount",
                "must be a whole number, not a fractional number",
            ),
            (
                r#"{"user_id": "a", "amount": 9223372036854775808}"#,
                "amount",
                "must be a whole number; 9223372036854775808 is out of range",
            ),
            (
                r#"{"user_id": 7, "amount": 1}"#,
                "user_id",
                "must be a string, not a number",
            ),
            (r#"{"user_id": "a"}"#, "amount", "is required"),
            (
                r#"{"user_id": "a", "amount": 1, "lines": [{"included": -1}]}"#,
                "lines[0].included",
                "must be a whole number of 0 or more; -1 is out of range",
            ),
            (
                r#"{"user_id": "a", "amount": 1, "lines": {}}"#,
                "lines",
                "must be a list, not a JSON object",
            ),
            (r#"["a", 1]"#, "body", "must be a JSON object, not a list"),
            (
                r#"{"user_id": "a", "amount": "#,
                "body",
                "is not valid JSON: EOF while parsing a value",
            ),
            (
                r#"{"user_id": "a", "amount": 1, "lines": [{}]}"#,
                "lines[0].included",
                "is required",
            ),
        ];
        for (json, field, message) in cases {
            assert_eq!(
                refusal::<Request>(json),
                (field.to_owned(), message.to_owned()),
                "{json}"
            );
        }
        let (field, message) = refusal::<Request>(r#"{"user_id": "a", "amount": 1, "memo": 1}"#);
        assert_eq!(field, "memo");
        assert!(
            message.starts_with("is not a field of this request (expected one of `user_id`"),
            "{message}"
        );
    }

    /// `(field, message)` of every field error the body is answered with.
    fn every_refusal<T: serde::de::DeserializeOwned>(json: &str) -> Vec<(String, String)> {
        let e = serde_json::from_str::<Object<T>>(json).err().unwrap();
        let api = body_error(&e.to_string());
        api.details.unwrap()["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["field"].as_str().unwrap().to_owned(),
                    f["message"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn every_bad_field_of_a_body_is_named() {
        let all = every_refusal::<Request>(
            r#"{"user_id": 7, "amount": "5", "memo": 1, "lines": [{"included": -1}]}"#,
        );
        let fields: Vec<&str> = all.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["amount", "lines[0].included", "memo", "user_id"],
            "{all:?}"
        );
        assert_eq!(all[0].1, "must be a whole number, not a string");
        assert!(
            all[2].1.starts_with("is not a field of this request"),
            "{all:?}"
        );
        // A missing field is named too, after the ones of the wrong type.
        let all = every_refusal::<Request>(r#"{"amount": "5"}"#);
        assert_eq!(
            all,
            [
                (
                    "amount".to_owned(),
                    "must be a whole number, not a string".to_owned()
                ),
                ("user_id".to_owned(), "is required".to_owned())
            ]
        );
        // One problem: exactly the answer it always was.
        assert_eq!(
            every_refusal::<Request>(r#"{"user_id": "a", "amount": true}"#),
            [(
                "amount".to_owned(),
                "must be a whole number, not true or false".to_owned()
            )]
        );
        // A field given twice is the body's fault.
        assert_eq!(
            every_refusal::<Request>(r#"{"user_id": "a", "amount": 1, "amount": 2}"#),
            [("body".to_owned(), "duplicate field `amount`".to_owned())]
        );
    }
}
