//! Conditional writes shared by the table adapters: a PutItem only where no item has the key, an
//! UpdateItem or DeleteItem under a condition, and the expressions they carry.
//!
//! A failed condition is an answer, not an error: each helper returns `Ok(Err(stored))`, with
//! the stored item when the request asked for it (`ReturnValuesOnConditionCheckFailure`) and
//! the service sent it.

use std::collections::HashMap;
use std::error::Error as StdError;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use hikyaku_core::ports::StoreError;

use super::item::Item;
use crate::error::{DynamoFailure, dynamo_failure};

/// A conditional write's answer: `Ok(())` when made, `Err(stored)` when the condition was
/// false (with the stored item when the service sent it).
pub(crate) type Conditional = Result<(), Option<Item>>;

/// Splits a conditional call's result: the condition failing is an answer, anything else a
/// [`StoreError`].
fn conditional<O, E>(
    operation: &'static str,
    result: Result<O, SdkError<E, HttpResponse>>,
) -> Result<Conditional, StoreError>
where
    E: StdError + Send + Sync + 'static,
    aws_sdk_dynamodb::Error: From<SdkError<E, HttpResponse>>,
{
    match result {
        Ok(_) => Ok(Ok(())),
        Err(err) => match dynamo_failure(operation, err) {
            DynamoFailure::ConditionFailed(stored) => Ok(Err(stored)),
            DynamoFailure::Store(err) => Err(err),
        },
    }
}

/// Sends `$request` with the condition, names and values of `$parts` (a [`Parts`]) and the
/// `ReturnValuesOnConditionCheckFailure` `$return_old`, and splits its result with
/// [`conditional`]. The SDK's request builders share these setters but no trait.
macro_rules! send_conditional {
    ($operation:expr, $request:expr, $parts:ident, $return_old:expr) => {
        conditional(
            $operation,
            $request
                .condition_expression($parts.condition)
                .set_expression_attribute_names($parts.names)
                .set_expression_attribute_values($parts.values)
                .set_return_values_on_condition_check_failure($return_old)
                .send()
                .await,
        )
    };
}

/// PutItem of `record` conditioned on `attribute_not_exists(#key)`, `key` being an attribute of
/// the table's key, so an existing item is never overwritten. `return_old` asks for the
/// existing item with the condition failure.
pub(crate) async fn put_if_absent(
    client: &Client,
    table: &str,
    operation: &'static str,
    key: &str,
    record: Item,
    return_old: Option<ReturnValuesOnConditionCheckFailure>,
) -> Result<Conditional, StoreError> {
    let mut absent = Update::default();
    let key = absent.name(key);
    absent.condition = format!("attribute_not_exists({key})");
    put_if(client, table, operation, record, absent, return_old).await
}

/// PutItem of `record` conditioned on `condition`'s condition (its `SET` and `REMOVE` parts
/// must be empty). `return_old` asks for the stored item with the condition failure.
pub(crate) async fn put_if(
    client: &Client,
    table: &str,
    operation: &'static str,
    record: Item,
    condition: Update,
    return_old: Option<ReturnValuesOnConditionCheckFailure>,
) -> Result<Conditional, StoreError> {
    let parts = condition.into_condition();
    let request = client.put_item().table_name(table).set_item(Some(record));
    send_conditional!(operation, request, parts, return_old)
}

/// UpdateItem of the item at `key` with `update`, under its condition; the stored item comes
/// back when the condition fails (ALL_OLD).
pub(crate) async fn update_if(
    client: &Client,
    table: &str,
    operation: &'static str,
    key: Item,
    update: Update,
) -> Result<Conditional, StoreError> {
    let parts = update.into_parts();
    let request = client
        .update_item()
        .table_name(table)
        .set_key(Some(key))
        .update_expression(parts.expression);
    let all_old = Some(ReturnValuesOnConditionCheckFailure::AllOld);
    send_conditional!(operation, request, parts, all_old)
}

/// UpdateItem of the item at `key` with `update`, under its condition, returning the item as
/// `returning` asks (`AllOld`: before the update, `AllNew`: after it): `Ok(Ok(item))` when
/// made (`None` if there was no item before), `Ok(Err(stored))` when the condition failed.
pub(crate) async fn update_returning(
    client: &Client,
    table: &str,
    operation: &'static str,
    key: Item,
    update: Update,
    returning: ReturnValue,
) -> Result<Result<Option<Item>, Option<Item>>, StoreError> {
    let parts = update.into_parts();
    let result = client
        .update_item()
        .table_name(table)
        .set_key(Some(key))
        .update_expression(parts.expression)
        .set_condition_expression((!parts.condition.is_empty()).then_some(parts.condition))
        .set_expression_attribute_names(parts.names)
        .set_expression_attribute_values(parts.values)
        .return_values(returning)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    match result {
        Ok(output) => Ok(Ok(output.attributes)),
        Err(err) => match dynamo_failure(operation, err) {
            DynamoFailure::ConditionFailed(stored) => Ok(Err(stored)),
            DynamoFailure::Store(err) => Err(err),
        },
    }
}

/// DeleteItem of the item at `key` under `condition`'s condition (its `SET` and `REMOVE` parts
/// must be empty); the stored item is not asked for.
pub(crate) async fn delete_if(
    client: &Client,
    table: &str,
    operation: &'static str,
    key: Item,
    condition: Update,
) -> Result<Conditional, StoreError> {
    let parts = condition.into_condition();
    let request = client.delete_item().table_name(table).set_key(Some(key));
    send_conditional!(operation, request, parts, None)
}

/// An UpdateItem's expressions, with only the names and values they use (DynamoDB refuses
/// unused ones). A conditional PutItem or DeleteItem uses just the condition.
#[derive(Default)]
pub(crate) struct Update {
    set: Vec<String>,
    add: Vec<String>,
    remove: Vec<String>,
    pub(crate) condition: String,
    pub(crate) names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Update {
    /// The placeholder of an attribute name: `#attribute` when the name is a plain word, else
    /// `#n<i>` (placeholders allow only letters, digits and `_`); the same name always gets the
    /// same placeholder.
    pub(crate) fn name(&mut self, attribute: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, name)| *name == attribute) {
            return placeholder.clone();
        }
        let placeholder = if is_plain(attribute) {
            format!("#{attribute}")
        } else {
            format!("#n{}", self.names.len())
        };
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    /// `:placeholder` bound to `value`; a placeholder that is not a plain word becomes `:v<i>`.
    pub(crate) fn value(&mut self, placeholder: &str, value: AttributeValue) -> String {
        let placeholder = if is_plain(placeholder) {
            format!(":{placeholder}")
        } else {
            format!(":v{}", self.values.len())
        };
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    /// `SET #attribute = :attribute`.
    pub(crate) fn set(&mut self, attribute: &str, value: AttributeValue) {
        let name = self.name(attribute);
        let value = self.value(attribute, value);
        self.set.push(format!("{name} = {value}"));
    }

    /// `SET` with an assignment written by the caller from [`name`](Self::name) and
    /// [`value`](Self::value) placeholders, e.g. `#at = if_not_exists(#at, :at)`.
    pub(crate) fn set_expression(&mut self, assignment: String) {
        self.set.push(assignment);
    }

    /// `ADD #attribute :attribute`: a number added to, or elements added to a set.
    pub(crate) fn add(&mut self, attribute: &str, value: AttributeValue) {
        let name = self.name(attribute);
        let value = self.value(attribute, value);
        self.add.push(format!("{name} {value}"));
    }

    /// `REMOVE #attribute`.
    pub(crate) fn remove(&mut self, attribute: &str) {
        let name = self.name(attribute);
        self.remove.push(name);
    }

    /// The update expression: `SET ...`, `ADD ...`, then `REMOVE ...`, each part only when not
    /// empty.
    pub(crate) fn expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.add.is_empty() {
            parts.push(format!("ADD {}", self.add.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        parts.join(" ")
    }

    /// The expressions and placeholders as a request takes them (`None`: no names or values).
    fn into_parts(self) -> Parts {
        Parts {
            expression: self.expression(),
            condition: self.condition,
            names: (!self.names.is_empty()).then_some(self.names),
            values: (!self.values.is_empty()).then_some(self.values),
        }
    }

    /// Just the condition's parts, for a PutItem or DeleteItem.
    fn into_condition(self) -> Parts {
        debug_assert!(
            self.set.is_empty() && self.add.is_empty() && self.remove.is_empty(),
            "a condition without SET or REMOVE"
        );
        self.into_parts()
    }
}

/// Letters, digits and `_` only: usable inside an expression placeholder as it is.
fn is_plain(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An [`Update`] taken apart for a request.
struct Parts {
    expression: String,
    condition: String,
    names: Option<HashMap<String, String>>,
    values: Option<HashMap<String, AttributeValue>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamodb::item::s;

    #[test]
    fn an_update_names_only_what_its_expressions_use() {
        let mut update = Update::default();
        update.set("state", s("sent"));
        update.add("opens", crate::dynamodb::item::n(1));
        update.remove("cursor");
        let owner = update.name("lease_owner");
        let value = update.value("owner", s("req-1"));
        update.condition = format!("{owner} = {value}");
        let parts = update.into_parts();
        assert_eq!(
            parts.expression,
            "SET #state = :state ADD #opens :opens REMOVE #cursor"
        );
        assert_eq!(parts.condition, "#lease_owner = :owner");
        let mut names: Vec<_> = parts.names.unwrap().into_keys().collect();
        names.sort();
        assert_eq!(names, ["#cursor", "#lease_owner", "#opens", "#state"]);
        assert_eq!(parts.values.unwrap().len(), 3);
        let mut odd = Update::default();
        odd.set("unsub#hikyaku-news", s("2026-12-24T09:00:00Z"));
        let again = odd.name("unsub#hikyaku-news");
        let parts = odd.into_parts();
        assert_eq!(parts.expression, "SET #n0 = :v0");
        assert_eq!(again, "#n0");
        assert_eq!(parts.names.unwrap()["#n0"], "unsub#hikyaku-news");
        let empty = Update::default().into_condition();
        assert!(empty.names.is_none() && empty.values.is_none());
    }
}
