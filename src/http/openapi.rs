//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the whole API, generated from the same
//! route table the router is built from ([`super::api_routes`]) and from the request types' JSON
//! Schemas, so it cannot drift from what the server does.

use serde_json::{json, Map, Value};

use super::{ok, ApiResult};

/// The problem document every error is.
fn problem_schema() -> Value {
    json!({
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "errors": {}
        }
    })
}

/// Turns a schemars root schema into an OpenAPI schema object: its `$defs` move to
/// `components/schemas` (OpenAPI resolves `#/…` references against the whole document) and the
/// references follow them.
fn inline(schema: Value, components: &mut Map<String, Value>) -> Value {
    fn rewrite(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get_mut("$ref") {
                    if let Some(name) = r.strip_prefix("#/$defs/") {
                        *r = format!("#/components/schemas/{name}");
                    }
                }
                map.values_mut().for_each(rewrite);
            }
            Value::Array(items) => items.iter_mut().for_each(rewrite),
            _ => {}
        }
    }
    let mut s = schema;
    if let Value::Object(map) = &mut s {
        map.remove("$schema");
        if let Some(Value::Object(defs)) = map.remove("$defs") {
            for (name, mut def) in defs {
                rewrite(&mut def);
                components.insert(name, def);
            }
        }
    }
    rewrite(&mut s);
    s
}

fn parameters(path: &str, query: Option<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| name.trim_start_matches('*'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if let Some(q) = query {
        let required: Vec<&str> =
            q["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        if let Some(props) = q["properties"].as_object() {
            for (name, schema) in props {
                let schema = if schema.get("type").is_some_and(|t| t.is_array()) {
                    json!({"type": "string"})
                } else {
                    schema.clone()
                };
                out.push(json!({"name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": schema}));
            }
        }
    }
    out
}

pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    let mut components: Map<String, Value> = Map::new();
    components.insert("Problem".into(), problem_schema());
    for route in super::api_routes() {
        let mut op = json!({
            "summary": route.summary,
            "description": format!("Roles: {}.", route.roles),
            "operationId": format!("{}{}", route.method.as_str().to_lowercase(), route.path.replace(['/', '{', '}', '.', '*'], "_")),
            "parameters": parameters(route.path, route.query.map(|q| q())),
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                "201": {"description": "Created", "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": {"description": "A problem", "content": {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
            },
        });
        if let Some(media) = route.produces {
            op["responses"]["200"] = json!({"description": "OK", "content": {media: {"schema": {"type": "string"}}}});
            if let Some(responses) = op["responses"].as_object_mut() {
                responses.remove("201");
            }
        }
        if let Some(body) = route.body {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": inline(body(), &mut components)}}});
        }
        if let Some(form) = route.multipart {
            op["requestBody"]["required"] = json!(true);
            op["requestBody"]["content"]["multipart/form-data"] = json!({"schema": form()});
        }
        // axum's catch-all `{*tile}` is an ordinary path parameter to OpenAPI.
        let entry = paths.entry(route.path.replace("{*", "{")).or_insert_with(|| json!({}));
        entry[route.method.as_str().to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Vadyl", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Event-sourced publication registry and runtime for connectors."},
        "servers": [{"url": "/api/Connector"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "A token from `vadyl token create` (or the admin token `vadyl serve` writes on first start). \
                    Each token has a request rate; beyond it the answer is 429 with Retry-After."}},
            "schemas": components,
        },
    })
}

pub async fn serve() -> ApiResult {
    ok(document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_routed_operation_is_documented_with_its_body_and_parameters() {
        let doc = super::document();
        assert_eq!(doc["openapi"], "3.1.0");
        let routes = super::super::api_routes();
        let documented: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(documented, routes.len(), "one operation per route");
        for r in &routes {
            let op = &doc["paths"][r.path.replace("{*", "{").as_str()][r.method.as_str().to_lowercase()];
            assert!(op.is_object(), "{} {} is not documented", r.method, r.path);
            assert_eq!(op["requestBody"].is_object(), r.body.is_some(), "{} {}", r.method, r.path);
            let path_params = r.path.matches('{').count();
            let documented_path_params =
                op["parameters"].as_array().unwrap().iter().filter(|p| p["in"] == "path").count();
            assert_eq!(path_params, documented_path_params, "{} {}", r.method, r.path);
        }
        assert_eq!(doc["paths"]["/memory/get"]["get"]["parameters"].as_array().unwrap().len(), 3);
    }
}
