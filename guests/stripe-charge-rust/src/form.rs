//! `application/x-www-form-urlencoded` bodies, the encoding Stripe's API takes.
//!
//! Encoding follows the WHATWG URL standard's form serializer (as the declarative engine's does):
//! ASCII letters, digits and `*-._` stay as they are, a space becomes `+`, every other byte of the
//! UTF-8 text becomes `%XX`. Nested values use Stripe's bracket notation: `metadata[order]=1`.

/// A form body, built field by field in order.
#[derive(Default)]
pub struct Form {
    body: String,
}

impl Form {
    /// Appends `name=value`.
    pub fn field(&mut self, name: &str, value: &str) -> &mut Self {
        if !self.body.is_empty() {
            self.body.push('&');
        }
        encode_into(&mut self.body, name);
        self.body.push('=');
        encode_into(&mut self.body, value);
        self
    }

    /// Appends `name=value` when there is a value.
    pub fn optional(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.field(name, value);
        }
        self
    }

    /// Appends `metadata[key]=value` for each pair, in order.
    pub fn metadata(&mut self, pairs: &[(String, String)]) -> &mut Self {
        for (key, value) in pairs {
            self.field(&format!("metadata[{key}]"), value);
        }
        self
    }

    /// The encoded body.
    pub fn finish(self) -> String {
        self.body
    }
}

fn encode_into(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(char::from(byte)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_joined_and_encoded() {
        let mut form = Form::default();
        form.field("amount", "2000").field("description", "order #1 & co/ü").optional("customer", None);
        form.metadata(&[("order".to_owned(), "1".to_owned()), ("a=b".to_owned(), "c+d".to_owned())]);
        assert_eq!(
            form.finish(),
            "amount=2000&description=order+%231+%26+co%2F%C3%BC&metadata%5Border%5D=1&metadata%5Ba%3Db%5D=c%2Bd"
        );
    }

    #[test]
    fn an_empty_form_is_empty() {
        assert_eq!(Form::default().finish(), "");
        let mut form = Form::default();
        form.optional("x", Some(""));
        assert_eq!(form.finish(), "x=");
    }
}
