//! Typed reads of fields in Stripe's JSON answers. Each returns a message naming the field when it
//! is missing or of the wrong type; the caller turns that into `unexpected-response`.

use serde_json::Value;

/// A required string field.
pub fn string(object: &Value, field: &str) -> Result<String, String> {
    optional_string(object, field)?.ok_or_else(|| format!("`{field}` is missing"))
}

/// A string field that may be absent or null.
pub fn optional_string(object: &Value, field: &str) -> Result<Option<String>, String> {
    match &object[field] {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        _ => Err(format!("`{field}` is not a string")),
    }
}

/// A required non-negative integer field.
pub fn unsigned(object: &Value, field: &str) -> Result<u64, String> {
    optional_unsigned(object, field)?.ok_or_else(|| format!("`{field}` is missing"))
}

/// A non-negative integer field that may be absent or null.
pub fn optional_unsigned(object: &Value, field: &str) -> Result<Option<u64>, String> {
    match &object[field] {
        Value::Null => Ok(None),
        value => value.as_u64().map(Some).ok_or_else(|| format!("`{field}` is not a non-negative integer")),
    }
}

/// A required boolean field.
pub fn boolean(object: &Value, field: &str) -> Result<bool, String> {
    match &object[field] {
        Value::Null => Err(format!("`{field}` is missing")),
        value => value.as_bool().ok_or_else(|| format!("`{field}` is not a boolean")),
    }
}

/// Unix seconds as RFC 3339 in UTC, e.g. `2025-11-25T12:00:00Z` (years up to 9999).
pub fn unix_seconds_to_rfc3339(seconds: u64) -> Result<String, String> {
    const MAX: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if seconds > MAX {
        return Err(format!("timestamp {seconds} is past the year 9999"));
    }
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm; eras of 400 years).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let (hour, minute, second) = (second_of_day / 3_600, second_of_day % 3_600 / 60, second_of_day % 60);
    Ok(format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_with_their_types() {
        let object: Value = serde_json::from_str(r#"{"id":"ch_1","amount":5,"neg":-1,"ok":true,"none":null}"#).unwrap();
        assert_eq!(string(&object, "id").unwrap(), "ch_1");
        assert_eq!(optional_string(&object, "none").unwrap(), None);
        assert_eq!(unsigned(&object, "amount").unwrap(), 5);
        assert!(boolean(&object, "ok").unwrap());
        assert_eq!(string(&object, "missing").unwrap_err(), "`missing` is missing");
        assert_eq!(string(&object, "amount").unwrap_err(), "`amount` is not a string");
        assert!(unsigned(&object, "neg").is_err());
        assert!(unsigned(&object, "id").is_err());
        assert!(boolean(&object, "none").is_err());
        assert!(boolean(&object, "id").is_err());
    }

    #[test]
    fn unix_seconds_become_rfc3339() {
        assert_eq!(unix_seconds_to_rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(unix_seconds_to_rfc3339(1_764_072_000).unwrap(), "2025-11-25T12:00:00Z");
        assert_eq!(unix_seconds_to_rfc3339(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(unix_seconds_to_rfc3339(4_107_542_399).unwrap(), "2100-02-28T23:59:59Z");
        assert_eq!(unix_seconds_to_rfc3339(253_402_300_799).unwrap(), "9999-12-31T23:59:59Z");
        assert!(unix_seconds_to_rfc3339(253_402_300_800).is_err());
    }
}
