//! The two expression languages of a declarative manifest: templates and JSONPath.
//!
//! **Templates** build requests. They are [minijinja](https://docs.rs/minijinja) templates rendered
//! in a locked-down environment:
//!
//! * no auto-escaping (requests are not HTML), strict undefined behaviour (printing or iterating an
//!   undefined value is an error, so a typo never silently sends an empty string);
//! * no loader, no `include`/`import`/`extends`/macros (those features are compiled out), no global
//!   functions (`range`, `namespace`… are undefined), and only the filters and tests listed in
//!   [`FILTERS`] and [`TESTS`];
//! * a fuel budget ([`FUEL`]) bounds the work and output of one rendering, so a loop over a large
//!   input cannot stall the engine.
//!
//! Template injection is impossible by construction: a manifest's templates are the only template
//! sources, and values from the invocation (`input`, `config`, response data) are passed as *data*
//! in the rendering context. They are never concatenated into template source nor parsed again, so
//! an input value of `{{ 7*7 }}` renders as the literal text `{{ 7*7 }}`.
//!
//! A *JSON template* is any JSON value whose string leaves are templates ([`render_value`]). A
//! string leaf that is exactly one `{{ expression }}` evaluates to the expression's JSON value
//! (number, boolean, object…), not its text, so `"{{ input.amount }}"` stays a number; every other
//! string leaf renders to text.
//!
//! **JSONPath** ([RFC 9535](https://www.rfc-editor.org/rfc/rfc9535)) reads responses. Paths are
//! parsed when a manifest is validated ([`parse_json_path`]); mappings that produce one value must
//! use a *singular query* (only name and index selectors, see [`is_singular_query`]), so
//! [`extract`] can never meet more than one match.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock, RwLock};

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;
use serde_json_path::JsonPath;

/// Instruction budget of one rendering (minijinja "fuel"): ample for request templates, small
/// enough that a hostile loop stops within milliseconds.
pub const FUEL: u64 = 100_000;

/// Longest template source accepted, in bytes.
pub const MAX_TEMPLATE_LEN: usize = 8 * 1024;

/// Filters available to templates. Everything else is undefined.
///
/// `from_pairs` is Vadyl's own: it turns a list of `[key, value]` pairs (the JSON form of WIT's
/// `list<tuple<string, string>>`) into an object, e.g. for `metadata[...]` form fields.
pub const FILTERS: &[&str] = &[
    "default",
    "d",
    "lower",
    "upper",
    "trim",
    "replace",
    "urlencode",
    "tojson",
    "string",
    "int",
    "length",
    "join",
    "first",
    "last",
    "from_pairs",
];

/// Tests available to templates (`{% if x is defined %}`).
pub const TESTS: &[&str] = &["defined", "undefined", "none", "string", "number", "mapping", "sequence"];

/// Why a template or a JSONPath could not be parsed, evaluated or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template is {len} bytes long; the limit is {MAX_TEMPLATE_LEN}")]
    TooLong { len: usize },
    #[error("invalid template syntax: {0}")]
    Syntax(String),
    #[error("template rendering failed: {0}")]
    Render(String),
    #[error("template produced a value that is not JSON: {0}")]
    NotJson(String),
    #[error("invalid JSONPath `{path}`: {message}")]
    JsonPath { path: String, message: String },
}

fn from_pairs(value: minijinja::Value) -> Result<minijinja::Value, minijinja::Error> {
    if value.is_undefined() || value.is_none() {
        return Ok(value);
    }
    let invalid =
        || minijinja::Error::new(ErrorKind::InvalidOperation, "from_pairs expects a list of [key, value] pairs");
    let mut map = serde_json::Map::new();
    for pair in value.try_iter()? {
        let items: Vec<minijinja::Value> = pair.try_iter().map_err(|_| invalid())?.collect();
        let [key, val] = items.as_slice() else { return Err(invalid()) };
        let key = key.as_str().ok_or_else(invalid)?.to_string();
        let val = serde_json::to_value(val).map_err(|_| invalid())?;
        map.insert(key, val);
    }
    Ok(to_mj(&Value::Object(map)))
}

fn to_mj(value: &Value) -> minijinja::Value {
    minijinja::Value::from(Serde(value))
}

/// The locked-down environment every manifest template is compiled and rendered in, built once.
fn environment() -> &'static Environment<'static> {
    static ENV: LazyLock<Environment<'static>> = LazyLock::new(build_environment);
    &ENV
}

fn build_environment() -> Environment<'static> {
    use minijinja::{filters, tests};
    let mut env = Environment::empty();
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.add_filter("default", filters::default);
    env.add_filter("d", filters::default);
    env.add_filter("lower", filters::lower);
    env.add_filter("upper", filters::upper);
    env.add_filter("trim", filters::trim);
    env.add_filter("replace", filters::replace);
    env.add_filter("urlencode", filters::urlencode);
    env.add_filter("tojson", filters::tojson);
    env.add_filter("string", filters::string);
    env.add_filter("int", filters::int);
    env.add_filter("length", filters::length);
    env.add_filter("join", filters::join);
    env.add_filter("first", filters::first);
    env.add_filter("last", filters::last);
    env.add_filter("from_pairs", from_pairs);
    env.add_test("defined", tests::is_defined);
    env.add_test("undefined", tests::is_undefined);
    env.add_test("none", tests::is_none);
    env.add_test("string", tests::is_string);
    env.add_test("number", tests::is_number);
    env.add_test("mapping", tests::is_mapping);
    env.add_test("sequence", tests::is_sequence);
    env
}

fn check_len(template: &str) -> Result<(), TemplateError> {
    if template.len() > MAX_TEMPLATE_LEN {
        return Err(TemplateError::TooLong { len: template.len() });
    }
    Ok(())
}

/// Renders a minijinja error with its chain of causes, on one line. The template is named by its
/// line only: cached templates are registered under their own text, which the message need not
/// repeat.
fn describe(e: &minijinja::Error) -> String {
    let mut out = e.kind().to_string();
    if let Some(detail) = e.detail() {
        out.push_str(": ");
        out.push_str(detail);
    }
    if let Some(line) = e.line() {
        out.push_str(&format!(" (line {line})"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Parses `template` and checks it only uses the allowed filters and tests.
pub fn check_syntax(template: &str) -> Result<(), TemplateError> {
    referenced_variables(template).map(|_| ())
}

/// Filter and test names used in the `{{ … }}` and `{% … %}` blocks of a template that already
/// parsed, as `(is_test, name)`.
///
/// minijinja resolves filters and tests when rendering, so an unknown name would only fail at
/// invocation time; this scan reports it when the manifest is validated instead. It reads the
/// source the way the lexer does for these two constructs: string literals are skipped, a filter
/// is the identifier after `|`, a test the identifier after `is` (and an optional `not`), and
/// comments and `{% raw %}` blocks are not code.
fn filters_and_tests(template: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            Some('#') => {
                rest = after.find("#}").map_or("", |end| &after[end + 2..]);
                continue;
            }
            _ => {
                rest = after;
                continue;
            }
        };
        let code_start = &after[1..];
        let (code, remainder) = split_code(code_start, close);
        let words = code.trim_matches(['-', '+', ' ', '\t', '\n', '\r']);
        rest = remainder;
        if close == "%}" && words.split_whitespace().next() == Some("raw") {
            rest = skip_raw(rest);
            continue;
        }
        scan_code(code, &mut out);
    }
    out
}

/// Splits `s` at the first `close` delimiter outside a string literal.
fn split_code<'a>(s: &'a str, close: &str) -> (&'a str, &'a str) {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => quote = Some(c),
            None if s[i..].starts_with(close) => return (&s[..i], &s[i + close.len()..]),
            None => {}
        }
    }
    (s, "")
}

/// The text after the `{% endraw %}` that closes a raw block.
fn skip_raw(s: &str) -> &str {
    let mut rest = s;
    while let Some(pos) = rest.find("{%") {
        let (code, remainder) = split_code(&rest[pos + 2..], "%}");
        if code.trim_matches(['-', '+', ' ', '\t', '\n', '\r']) == "endraw" {
            return remainder;
        }
        rest = &rest[pos + 2..];
    }
    ""
}

fn scan_code(code: &str, out: &mut Vec<(bool, String)>) {
    // Tokens outside string literals: identifiers and single punctuation characters.
    let mut tokens: Vec<String> = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' {
            let mut escaped = false;
            for d in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
            tokens.push("\"".into());
        } else if c.is_alphanumeric() || c == '_' {
            let mut ident = c.to_string();
            while let Some(&d) = chars.peek() {
                if d.is_alphanumeric() || d == '_' {
                    ident.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(ident);
        } else if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    let mut i = 0;
    while i < tokens.len() {
        let next_ident = |j: usize| tokens.get(j).filter(|t| t.starts_with(|c: char| c.is_alphabetic() || c == '_'));
        if tokens[i] == "|" {
            if let Some(name) = next_ident(i + 1) {
                out.push((false, name.clone()));
            }
        } else if tokens[i] == "is" {
            let j = if tokens.get(i + 1).is_some_and(|t| t == "not") { i + 2 } else { i + 1 };
            if let Some(name) = next_ident(j) {
                out.push((true, name.clone()));
            }
        }
        i += 1;
    }
}

/// The context variables `template` reads, as dotted paths (`input.amount`, `config.baseUrl`).
///
/// Attribute chains are reported as deep as they are written (`input.card.number`); a subscript
/// (`input["a"]`, `input.items[0]`) stops the chain at the subscripted value. Variables the template
/// assigns itself (`{% set %}`, loop variables) are not reported. Unknown filters and tests are
/// syntax errors here, so a template that passes this function can be rendered by [`render`].
pub fn referenced_variables(template: &str) -> Result<BTreeSet<String>, TemplateError> {
    check_len(template)?;
    let env = environment();
    let compiled = env.template_from_str(template).map_err(|e| TemplateError::Syntax(describe(&e)))?;
    for (is_test, name) in filters_and_tests(template) {
        let (known, what) = if is_test { (TESTS, "test") } else { (FILTERS, "filter") };
        if !known.contains(&name.as_str()) {
            return Err(TemplateError::Syntax(format!("unknown {what} `{name}`; available: {}", known.join(", "))));
        }
    }
    Ok(compiled.undeclared_variables(true).into_iter().collect())
}

/// Renders `template` to text with `ctx` (a JSON object, typically `{"input": …, "config": …}`).
///
/// Values in `ctx` are data: they are never parsed as templates. See [`template_context`] for how
/// `null` members are treated.
pub fn render(template: &str, ctx: &(impl RenderContext + ?Sized)) -> Result<String, TemplateError> {
    check_len(template)?;
    let render = |t: minijinja::Template<'_, '_>| {
        t.render(ctx.template_value()).map_err(|e| TemplateError::Render(describe(&e)))
    };
    let cache = compiled_templates();
    {
        let env = cache.read().unwrap_or_else(|p| p.into_inner());
        if let Ok(t) = env.get_template(template) {
            return render(t);
        }
    }
    let mut env = cache.write().unwrap_or_else(|p| p.into_inner());
    if env.templates().count() >= MAX_CACHED_TEMPLATES {
        env.clear_templates();
    }
    // Named by their own text: the cache key is the source (`describe` leaves the name out).
    env.add_template_owned(template.to_owned(), template.to_owned())
        .map_err(|e| TemplateError::Syntax(describe(&e)))?;
    let t = env.get_template(template).map_err(|e| TemplateError::Syntax(describe(&e)))?;
    render(t)
}

/// Compiled templates kept at once; beyond, the cache starts over (manifests are loaded once and
/// reuse their templates on every invocation, so the working set is small).
const MAX_CACHED_TEMPLATES: usize = 4096;

/// Templates compiled once and rendered many times, by source text, in an environment configured
/// like [`environment`]. Compiling a template costs more than rendering it.
fn compiled_templates() -> &'static RwLock<Environment<'static>> {
    static CACHE: LazyLock<RwLock<Environment<'static>>> = LazyLock::new(|| RwLock::new(build_environment()));
    &CACHE
}

/// Compiled values by source text, built once and shared; bounded like the template cache.
type SourceCache<V> = LazyLock<RwLock<std::collections::HashMap<String, Arc<V>>>>;

/// The value cached for `source`, built with `build` on a miss.
fn cached<V>(
    cache: &SourceCache<V>,
    source: &str,
    build: impl FnOnce() -> Result<V, TemplateError>,
) -> Result<Arc<V>, TemplateError> {
    if let Some(v) = cache.read().unwrap_or_else(|p| p.into_inner()).get(source) {
        return Ok(v.clone());
    }
    let built = Arc::new(build()?);
    let mut cache = cache.write().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= MAX_CACHED_TEMPLATES {
        cache.clear();
    }
    cache.insert(source.to_owned(), built.clone());
    Ok(built)
}

/// Compiled expressions (the single-expression templates), by source text.
fn compiled_expression(expr: &str) -> Result<Arc<minijinja::Expression<'static, 'static>>, TemplateError> {
    static CACHE: SourceCache<minijinja::Expression<'static, 'static>> = LazyLock::new(Default::default);
    cached(&CACHE, expr, || {
        environment().compile_expression_owned(expr.to_owned()).map_err(|e| TemplateError::Syntax(describe(&e)))
    })
}

/// If `template` is exactly one `{{ expression }}` (surrounding whitespace allowed), the expression.
pub fn single_expression(template: &str) -> Option<&str> {
    let inner = template.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    let nested = ["{{", "}}", "{%", "%}", "{#", "#}"].iter().any(|m| inner.contains(m));
    (!nested && !inner.trim().is_empty()).then_some(inner.trim())
}

/// Evaluates one template string leaf of a JSON template (see the module docs).
///
/// A single-expression template yields the expression's value as JSON (`undefined` becomes
/// `null`); any other template yields its rendered text as a JSON string.
pub fn render_leaf(template: &str, ctx: &(impl RenderContext + ?Sized)) -> Result<Value, TemplateError> {
    let Some(expr) = single_expression(template) else {
        return render(template, ctx).map(Value::String);
    };
    check_len(template)?;
    let compiled = compiled_expression(expr)?;
    let value = compiled.eval(ctx.template_value()).map_err(|e| TemplateError::Render(describe(&e)))?;
    if value.is_undefined() {
        return Ok(Value::Null);
    }
    serde_json::to_value(&value).map_err(|e| TemplateError::NotJson(e.to_string()))
}

/// Renders a JSON template: every string leaf goes through [`render_leaf`]; object keys, numbers,
/// booleans and `null` are kept as written.
pub fn render_value(template: &Value, ctx: &(impl RenderContext + ?Sized)) -> Result<Value, TemplateError> {
    Ok(match template {
        Value::String(s) => render_leaf(s, ctx)?,
        Value::Array(items) => Value::Array(items.iter().map(|v| render_value(v, ctx)).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| Ok((k.clone(), render_value(v, ctx)?))).collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// The rendering context for request templates: `{"input": input, "config": config}`.
///
/// Object members whose value is `null` are removed (recursively; array elements are kept), so
/// an optional field sent as `null` and one left out behave the same: both are *undefined* in
/// templates, where `{{ x | default("…") }}` and `{% if x is defined %}` handle them and a bare
/// `{{ x }}` in text is an error.
pub fn template_context(input: &Value, config: &Value) -> Context {
    Context::new(serde_json::json!({ "input": strip_null_members(input), "config": strip_null_members(config) }))
}

/// What templates are rendered with: a JSON object.
pub trait RenderContext {
    /// The object as a template value.
    fn template_value(&self) -> minijinja::Value;
}

impl RenderContext for Value {
    fn template_value(&self) -> minijinja::Value {
        to_mj(self)
    }
}

/// A rendering context converted once for the many templates of one request (the conversion costs
/// about as much as rendering a small template).
#[derive(Debug, Clone)]
pub struct Context {
    json: Value,
    value: minijinja::Value,
}

impl Context {
    pub fn new(json: Value) -> Self {
        let value = to_mj(&json);
        Self { json, value }
    }

    pub fn json(&self) -> &Value {
        &self.json
    }
}

impl RenderContext for Context {
    fn template_value(&self) -> minijinja::Value {
        self.value.clone()
    }
}

fn strip_null_members(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_null_members(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_null_members).collect()),
        other => other.clone(),
    }
}

/// Parses an RFC 9535 JSONPath query.
pub fn parse_json_path(path: &str) -> Result<JsonPath, TemplateError> {
    JsonPath::parse(path).map_err(|e| TemplateError::JsonPath { path: path.into(), message: e.to_string() })
}

/// [`parse_json_path`], parsed once per query text: a manifest's response mappings are evaluated on
/// every invocation, and parsing a query costs more than running it.
pub fn compiled_json_path(path: &str) -> Result<Arc<JsonPath>, TemplateError> {
    static CACHE: SourceCache<JsonPath> = LazyLock::new(Default::default);
    cached(&CACHE, path, || parse_json_path(path))
}

/// Whether `path` is a valid RFC 9535 *singular query* (§2.3.5.1): a root query with only name and
/// index selectors, which selects at most one node.
///
/// serde_json_path does not expose its query structure, but RFC 9535 only admits singular queries
/// as comparison operands, so the check parses `$[?<path> == null]`: that succeeds exactly when the
/// (separately parsed) `path` is singular.
pub fn is_singular_query(path: &str) -> bool {
    path.starts_with('$') && JsonPath::parse(path).is_ok() && JsonPath::parse(&format!("$[?{path} == null]")).is_ok()
}

/// The single value `path` selects in `doc`.
///
/// * exactly one match: `Some(value)` (a clone);
/// * no match: `None` — the mapping's `default` applies, or the field is missing;
/// * more than one match: `None` as well, because picking one would be arbitrary. Validated
///   manifests only use singular queries for values, which can never match more than once.
pub fn extract(path: &JsonPath, doc: &Value) -> Option<Value> {
    path.query(doc).exactly_one().ok().cloned()
}

/// Whether `path` selects at least one node of `doc` (used by error-rule `when` conditions, which
/// may use filters and wildcards).
pub fn matches(path: &JsonPath, doc: &Value) -> bool {
    !path.query(doc).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(t: &str) -> Vec<String> {
        referenced_variables(t).unwrap().into_iter().collect()
    }

    #[test]
    fn referenced_variables_are_nested_paths() {
        assert_eq!(
            vars("{{ config.baseUrl }}/v1/charges/{{ input.chargeId | urlencode }}"),
            ["config.baseUrl", "input.chargeId"]
        );
        assert_eq!(vars("{% for k, v in input.metadata %}{{ k }}={{ v }}{% endfor %}"), ["input.metadata"]);
        assert_eq!(vars("{% set x = input.a.b %}{{ x.c }}"), ["input.a.b"]);
        assert_eq!(vars("{{ input['amount'] }}"), ["input"]);
        assert_eq!(vars("{{ range(3) }}"), ["range"]);
        assert_eq!(vars("plain text"), Vec::<String>::new());
    }

    #[test]
    fn syntax_errors_unknown_filters_and_multi_template_features_are_refused() {
        for bad in [
            "{{ input.amount ",
            "{% if x %}",
            "{{ input.x | capitalize }}",
            "{{ input.x | safe }}",
            "{% include 'other' %}",
            "{% extends 'base' %}",
            "{% import 'm' as m %}",
            "{% macro m() %}{% endmacro %}",
            "{{ x is odd }}",
        ] {
            assert!(matches!(referenced_variables(bad), Err(TemplateError::Syntax(_))), "{bad} should be refused");
        }
        assert!(matches!(check_syntax(&"a".repeat(MAX_TEMPLATE_LEN + 1)), Err(TemplateError::TooLong { .. })));
        assert!(check_syntax("{{ input.amount | string }}").is_ok());
    }

    #[test]
    fn filter_and_test_scan_ignores_strings_comments_and_raw_blocks() {
        assert!(referenced_variables("{{ 'a | capitalize' ~ input.x | upper }}").is_ok());
        assert!(referenced_variables("{# x | capitalize #}{{ input.x }}").is_ok());
        assert!(referenced_variables("{% raw %}{{ x | capitalize }}{% endraw %}{{ input.x | lower }}").is_ok());
        assert!(referenced_variables("{% if input.x is not defined %}-{% endif %}").is_ok());
        assert!(referenced_variables("{% if input.x is not odd %}-{% endif %}").is_err());
        assert!(referenced_variables("{{ input.x | default(input.y | title) }}").is_err());
        assert!(referenced_variables("{% for p in input.items | reverse %}{% endfor %}").is_err());
    }

    #[test]
    fn render_is_strict_and_unescaped() {
        let ctx = json!({"input": {"name": "<Ann & \"Bob\">", "n": 3}});
        assert_eq!(render("{{ input.name }}:{{ input.n }}", &ctx).unwrap(), "<Ann & \"Bob\">:3");
        let err = render("{{ input.nope }}", &ctx).unwrap_err();
        assert!(matches!(err, TemplateError::Render(ref m) if m.contains("undefined")), "{err}");
        assert_eq!(render("{{ input.nope | default('x') }}", &ctx).unwrap(), "x");
        assert!(render("{{ range(3) }}", &ctx).is_err(), "no global functions");
    }

    #[test]
    fn input_values_are_data_never_templates() {
        let ctx = json!({"input": {"x": "{{ 7*7 }}", "y": "{% for i in input %}{% endfor %}"}});
        assert_eq!(render("{{ input.x }}", &ctx).unwrap(), "{{ 7*7 }}");
        assert_eq!(render("a{{ input.y }}b", &ctx).unwrap(), "a{% for i in input %}{% endfor %}b");
        assert_eq!(render_leaf("{{ input.x }}", &ctx).unwrap(), json!("{{ 7*7 }}"));
        assert_eq!(render("{{ 7*7 }}", &ctx).unwrap(), "49", "the manifest's own template is evaluated");
    }

    #[test]
    fn fuel_bounds_hostile_templates() {
        let ctx = json!({"input": {}});
        let err = render("{% for i in [1,2,3,4,5,6,7,8,9,10] * 10000 %}{{ i }}{% endfor %}", &ctx).unwrap_err();
        assert!(matches!(err, TemplateError::Render(ref m) if m.contains("fuel")), "{err}");
        assert!(render("{{ 'x' * 100000000000 }}", &ctx).is_err());
        // The budget is per rendering, not shared by the process-wide environment.
        for _ in 0..20_000 {
            assert_eq!(render("{% for i in [1, 2, 3] %}{{ i }}{% endfor %}", &ctx).unwrap(), "123");
        }
    }

    #[test]
    fn json_templates_keep_types_of_single_expressions() {
        let ctx = template_context(
            &json!({"amount": 1200, "capture": false, "description": null, "metadata": [["order", "42"]]}),
            &json!({"prefix": "ord"}),
        );
        let t = json!({
            "amount": "{{ input.amount }}",
            "capture": "{{- input.capture -}}",
            "description": "{{ input.description }}",
            "label": "{{ config.prefix }}-{{ input.amount }}",
            "metadata": "{{ input.metadata | from_pairs }}",
            "fixed": [1, true, null]
        });
        assert_eq!(
            render_value(&t, &ctx).unwrap(),
            json!({"amount": 1200, "capture": false, "description": null, "label": "ord-1200",
                   "metadata": {"order": "42"}, "fixed": [1, true, null]})
        );
        assert!(render_leaf("{{ input.amount | from_pairs }}", &ctx).is_err());
        assert!(render_leaf("{{ input.description }} text", &ctx).is_err(), "undefined in text is an error");
    }

    #[test]
    fn single_expression_detection() {
        assert_eq!(single_expression(" {{ input.a }} "), Some("input.a"));
        assert_eq!(single_expression("{{- input.a -}}"), Some("input.a"));
        assert_eq!(single_expression("{{ a }}{{ b }}"), None);
        assert_eq!(single_expression("x{{ a }}"), None);
        assert_eq!(single_expression("{{ }}"), None);
    }

    #[test]
    fn json_path_extraction_and_singularity() {
        let doc = json!({"body": {"id": "ch_1", "items": [{"id": 1}, {"id": 2}], "a-b": 3}});
        let one = parse_json_path("$.body.id").unwrap();
        assert_eq!(extract(&one, &doc), Some(json!("ch_1")));
        assert_eq!(extract(&parse_json_path("$.body.missing").unwrap(), &doc), None);
        assert_eq!(extract(&parse_json_path("$.body.items[*].id").unwrap(), &doc), None, "two matches");
        assert_eq!(extract(&parse_json_path("$.body['a-b']").unwrap(), &doc), Some(json!(3)));
        assert!(matches(&parse_json_path("$.body.items[?@.id == 2]").unwrap(), &doc));
        assert!(!matches(&parse_json_path("$.body.items[?@.id == 3]").unwrap(), &doc));
        assert!(matches!(parse_json_path("$.body[").unwrap_err(), TemplateError::JsonPath { .. }));
        assert!(parse_json_path("body.id").is_err());

        for singular in ["$", "$.a", "$.a[0].b", "$['a-b']", "$.a[-1]"] {
            assert!(is_singular_query(singular), "{singular}");
        }
        for plural in ["$.a[*]", "$..a", "$.a[0:2]", "$.a[?@.x]", "$['a','b']", "$.a[", "@.a", "$.a] == 1 || $[?$.b"] {
            assert!(!is_singular_query(plural), "{plural}");
        }
    }
}
