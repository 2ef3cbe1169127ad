//! The kit's part of every service's OpenAPI document: the schemas of the
//! values it validates, and the answers it gives on its own.
//!
//! A service documents its own routes with `#[utoipa::path]`. What the kit
//! adds to every route — the extractors' rejections ([`crate::extract`]), the
//! body limit and the request timeout (the kit's HTTP layers) — is written into the
//! document here, by [`document_kit_answers`], which the kit's server applies to
//! the document it serves. The schemas are built from the same constants the
//! checks use ([`crate::validate`], [`crate::idempotency`]), so the document
//! cannot promise what the server refuses.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Components, ContentBuilder, OpenApi, Ref, RefOr, Required, Response, ResponseBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

use crate::problem::{PROBLEM_JSON, Problem, RETRY_AFTER_SECS, ValidationProblem};
use crate::{idempotency, validate};

/// An identifier ([`validate::identifier`]): a sku, a user id.
pub fn identifier_schema(description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(1))
        .max_length(Some(validate::IDENTIFIER_MAX_CHARS))
        .pattern(Some(validate::IDENTIFIER_PATTERN))
        .examples([serde_json::json!("SKU-1")])
        .into()
}

/// Text of 1–`max_chars` characters, not blank; `no_control` when control
/// characters are refused too ([`validate::no_control_characters`]).
pub fn text_schema(description: &str, max_chars: usize, no_control: bool) -> Schema {
    let pattern = if no_control {
        validate::NOT_BLANK_NO_CONTROL_PATTERN
    } else {
        validate::NOT_BLANK_PATTERN
    };
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(1))
        .max_length(Some(max_chars))
        .pattern(Some(pattern))
        .into()
}

/// A whole number in `minimum..=maximum` (JSON numbers with a fraction are refused).
pub fn integer_schema(description: &str, minimum: i64, maximum: i64) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .description(Some(description))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .into()
}

/// `schema`, with `null` accepted too (an `Option` field that reads `null` as absent).
pub fn or_null(mut schema: Schema) -> Schema {
    if let Schema::Object(object) = &mut schema
        && let SchemaType::Type(kind) = object.schema_type.clone()
    {
        object.schema_type = SchemaType::from_iter([kind, Type::Null]);
    }
    schema
}

/// The optional `Idempotency-Key` request header ([`idempotency::key`]).
pub fn idempotency_key_parameter(description: &str) -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(idempotency::KEY_MAX_CHARS + 2))
                .pattern(Some(idempotency::KEY_PATTERN)),
        ))
        .build()
}

/// A response whose body is a problem of the schema named `schema`.
pub fn problem_response(description: &str, schema: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        )
        .build()
}

/// Writes into `openapi` what the kit answers on every route of it:
///
/// - `400` on every operation with parameters or a body (a path segment that
///   is not UTF-8, a query string of the wrong shape, malformed JSON);
/// - on every operation with a JSON body: `413` over the body limit, `415`
///   without a JSON content type, `422` for well-formed JSON of the wrong shape
///   (unknown field, wrong type, a number out of its type's range);
/// - `503` with `Retry-After` everywhere (the request timeout, and every
///   service's refusal when a store cannot serve);
///
/// and registers the problem schemas. A status an operation documents itself
/// is kept, its `503` given the `Retry-After` header if it lacks one.
pub fn document_kit_answers(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Components::new);
    components.add_security_scheme(
        crate::auth::BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A JWT signed with the deployment's key (EdDSA by default): `sub` is the user \
                     the request acts for, `scope` may grant `inventory:admin`; `exp`, `iss` and \
                     `aud` are required. `capctl token SUBJECT` mints a development token.",
                ))
                .build(),
        ),
    );
    for (name, schema) in [
        (Problem::name(), Problem::schema()),
        (ValidationProblem::name(), ValidationProblem::schema()),
    ] {
        components
            .schemas
            .entry(name.into_owned())
            .or_insert(schema);
    }
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            (&mut item.get, false),
            (&mut item.put, true),
            (&mut item.post, true),
            (&mut item.delete, true),
            (&mut item.patch, true),
        ];
        for (operation, write) in operations {
            if let Some(operation) = operation {
                document_operation(operation);
                document_bearer_answers(operation, write);
            }
        }
    }
}

fn document_operation(operation: &mut Operation) {
    let has_body = operation.request_body.is_some();
    let has_parameters = operation
        .parameters
        .as_ref()
        .is_some_and(|parameters| !parameters.is_empty());
    let problem = Problem::name();
    let validation = ValidationProblem::name();
    let mut answers: Vec<(&str, &str, &str)> = Vec::new();
    if has_body || has_parameters {
        answers.push((
            "400",
            "Malformed request: JSON syntax, a query string or path segment that cannot be read",
            &*problem,
        ));
    }
    if has_body {
        answers.extend([
            ("413", "The body is over the configured limit", &*problem),
            (
                "415",
                "The body is not sent as `Content-Type: application/json`",
                &*problem,
            ),
            (
                "422",
                "Well-formed JSON of the wrong shape: an unknown field, a wrong type, a number out of range",
                &*validation,
            ),
        ]);
    }
    answers.push((
        "503",
        "The service cannot answer now (a store is unreachable or the request timed out); retry after `Retry-After` seconds",
        &*problem,
    ));
    let responses = &mut operation.responses.responses;
    for (status, description, schema) in answers {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(problem_response(description, schema)));
    }
    if let Some(RefOr::T(unavailable)) = responses.get_mut("503") {
        unavailable
            .headers
            .entry("Retry-After".to_owned())
            .or_insert_with(|| RefOr::T(retry_after_header()));
    }
}

/// On an operation that requires the bearer token (`security` names
/// [`crate::auth::BEARER_SCHEME`]): `401` with `WWW-Authenticate`, and on a
/// write, `429` with `Retry-After` (the per-subject rate limit).
fn document_bearer_answers(operation: &mut Operation, write: bool) {
    let secured = operation.security.as_ref().is_some_and(|requirements| {
        serde_json::to_value(requirements)
            .ok()
            .is_some_and(|value| value.to_string().contains(crate::auth::BEARER_SCHEME))
    });
    if !secured {
        return;
    }
    let problem = Problem::name();
    let responses = &mut operation.responses.responses;
    responses.entry("401".to_owned()).or_insert_with(|| {
        let mut response = problem_response(
            "No valid bearer token: missing, malformed, expired, wrongly signed, `alg: none`, \
             or for another issuer or audience",
            &problem,
        );
        response.headers.insert(
            "WWW-Authenticate".to_owned(),
            RefOr::T(
                HeaderBuilder::new()
                    .description(Some(
                        "`Bearer realm=…`, with `error=\"invalid_token\"` when a token was sent",
                    ))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .build(),
            ),
        );
        RefOr::T(response)
    });
    if write {
        responses.entry("429".to_owned()).or_insert_with(|| {
            let mut response = problem_response(
                "The token's subject is over its write rate limit; retry after `Retry-After` seconds",
                &problem,
            );
            response.headers.insert(
                "Retry-After".to_owned(),
                RefOr::T(
                    HeaderBuilder::new()
                        .description(Some("Seconds until the subject may write again"))
                        .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
                        .build(),
                ),
            );
            RefOr::T(response)
        });
    }
}

fn retry_after_header() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .description(Some("Seconds to wait before retrying"))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(*RETRY_AFTER_SECS.start()))
                .maximum(Some(*RETRY_AFTER_SECS.end())),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::{OpenApiBuilder, PathsBuilder};

    use super::*;

    #[test]
    fn every_operation_gets_the_kits_answers() {
        let post = OperationBuilder::new()
            .request_body(Some(RequestBodyBuilder::new().build()))
            .response("201", ResponseBuilder::new().description("Created"))
            .response("503", ResponseBuilder::new().description("Mine"));
        let mut openapi = OpenApiBuilder::new()
            .paths(PathsBuilder::new().path("/things", PathItem::new(HttpMethod::Post, post)))
            .build();
        document_kit_answers(&mut openapi);
        let value = serde_json::to_value(&openapi).expect("serializable");
        let responses = &value["paths"]["/things"]["post"]["responses"];
        for status in ["201", "400", "413", "415", "422", "503"] {
            assert!(responses.get(status).is_some(), "{status}: {responses}");
        }
        assert_eq!(
            responses["503"]["description"], "Mine",
            "an own answer is kept"
        );
        assert!(responses["503"]["headers"]["Retry-After"].is_object());
        assert_eq!(
            responses["422"]["content"][PROBLEM_JSON]["schema"]["$ref"],
            "#/components/schemas/ValidationProblem"
        );
        assert!(value["components"]["schemas"]["ValidationProblem"].is_object());
    }
}
