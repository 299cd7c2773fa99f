//! The charges and refunds the fake keeps, and how Stripe's API renders them.

use std::collections::BTreeMap;

use serde_json::{json, Value};
/// The card a charge was made with, as Stripe returns it in `source` (a connector must redact it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub id: String,
    pub brand: String,
    pub last4: String,
    pub funding: String,
    pub exp_month: u32,
    pub exp_year: u32,
    pub fingerprint: String,
    pub country: String,
}

/// A charge the fake created (declined ones included, with `status == "failed"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub id: String,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    /// `"succeeded"` or `"failed"`.
    pub status: String,
    pub paid: bool,
    pub captured: bool,
    pub refunded: bool,
    pub created: i64,
    pub customer: Option<String>,
    pub description: Option<String>,
    pub receipt_email: Option<String>,
    pub statement_descriptor: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub card: Card,
    pub balance_transaction: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub decline_code: Option<String>,
    /// The `Idempotency-Key` of the request that created it.
    pub idempotency_key: Option<String>,
}

impl Charge {
    /// The charge as Stripe's API renders it.
    pub fn to_json(&self) -> Value {
        let outcome = if self.status == "succeeded" {
            json!({ "network_status": "approved_by_network", "reason": null, "risk_level": "normal",
                    "seller_message": "Payment complete.", "type": "authorized" })
        } else {
            json!({ "network_status": "declined_by_network", "reason": self.decline_code, "risk_level": "normal",
                    "seller_message": "The bank did not return any further details with this decline.",
                    "type": "issuer_declined" })
        };
        let source = json!({
            "id": self.card.id, "object": "card", "brand": self.card.brand, "country": self.card.country,
            "customer": self.customer, "cvc_check": "pass", "exp_month": self.card.exp_month,
            "exp_year": self.card.exp_year, "fingerprint": self.card.fingerprint, "funding": self.card.funding,
            "last4": self.card.last4, "metadata": {},
        });
        json!({
            "id": self.id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": if self.captured { self.amount } else { 0 },
            "amount_refunded": self.amount_refunded,
            "balance_transaction": self.balance_transaction,
            "captured": self.captured,
            "created": self.created,
            "currency": self.currency,
            "customer": self.customer,
            "description": self.description,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "livemode": false,
            "metadata": self.metadata,
            "outcome": outcome,
            "paid": self.paid,
            "payment_method": self.card.id,
            "receipt_email": self.receipt_email,
            "refunded": self.refunded,
            "source": source,
            "statement_descriptor": self.statement_descriptor,
            "status": self.status,
        })
    }
}

/// A refund the fake created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub id: String,
    pub charge: String,
    pub amount: i64,
    pub currency: String,
    pub reason: Option<String>,
    pub created: i64,
    pub metadata: BTreeMap<String, String>,
    pub balance_transaction: String,
}

impl Refund {
    /// The refund as Stripe's API renders it.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "balance_transaction": self.balance_transaction,
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "metadata": self.metadata,
            "payment_intent": null,
            "reason": self.reason,
            "receipt_number": null,
            "source_transfer_reversal": null,
            "status": "succeeded",
            "transfer_reversal": null,
        })
    }
}
