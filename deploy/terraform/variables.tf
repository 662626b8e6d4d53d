variable "project_id" {
  description = "Google Cloud project (make deploy PROJECT=...)."
  type        = string
}

variable "region" {
  description = "Region of the functions and Scheduler jobs (REGION=...)."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name (NAME=..., default capi)."
  type        = string
  default     = "capi"
}

variable "pixel_id" {
  description = "Meta pixel / dataset id (PIXEL_ID=...)."
  type        = string
}

variable "default_country" {
  description = "DEFAULT_COUNTRY: ISO alpha-2 region for national phone numbers (empty: none)."
  type        = string
  default     = ""
}

variable "alert_email" {
  description = "Email address for capi's alerts (ALERT_EMAIL=...; empty: alerts without a channel)."
  type        = string
  default     = ""
}

variable "browser_collection" {
  description = "BROWSER_COLLECTION=...: enhanced event coverage's Firestore collection (empty: off)."
  type        = string
  default     = ""
}

variable "browser_ttl_days" {
  description = "BROWSER_TTL_DAYS=...: days a browser's remembered keys live after their last change."
  type        = number
  default     = 90
}

variable "create_shopify_signing_key" {
  description = "SHOPIFY=1: a secret for Shopify's webhook signing key (POST /webhooks/shopify)."
  type        = bool
  default     = false
}

variable "create_woocommerce_signing_key" {
  description = "WOOCOMMERCE=1: a secret for WooCommerce's webhook secret (POST /webhooks/woocommerce)."
  type        = bool
  default     = false
}

variable "idempotency_collection" {
  description = "IDEMPOTENCY_COLLECTION=...: the idempotency guard and the order key (one Purchase per order); SHOPIFY=1 / WOOCOMMERCE=1 set capi_idempotency when it is not given (empty: off)."
  type        = string
  default     = ""
}

variable "delivery" {
  description = "DELIVERY=queue: capi_events publishes to Pub/Sub and capi_deliver sends in batches (docs/queue.md); direct by default."
  type        = string
  default     = "direct"
}
