variable "project_id" {
  description = "Google Cloud project that runs capi."
  type        = string
}

variable "region" {
  description = "Region of the functions."
  type        = string
  default     = "europe-west1"
}

variable "pixel_id" {
  description = "Meta pixel / dataset id (one pixel); null when destinations is used."
  type        = string
  default     = null
}

variable "destinations" {
  description = "Several pixels, each with its own token secret (see the module's variable; two-pixels.tfvars.example)."
  type = list(object({
    name                 = string
    pixel_id             = string
    hosts                = optional(list(string))
    forward_events       = optional(string)
    test_event_code      = optional(string)
    app_secret           = optional(bool, false)
    token_secret_version = optional(string, "latest")
  }))
  default = []
}

variable "default_country" {
  description = "ISO alpha-2 region for national phone numbers (empty: none)."
  type        = string
  default     = ""
}

variable "invoker_members" {
  description = "IAM members allowed to call capi_events with an ID token."
  type        = list(string)
  default     = []
}

variable "public_access" {
  description = "Public function guarded by an ingest key (for callers that cannot mint ID tokens)."
  type        = bool
  default     = false
}

variable "create_firestore_database" {
  description = "Create the (default) Firestore database in Native mode; false when the project already has one."
  type        = bool
  default     = true
}

variable "firestore_location" {
  description = "Firestore location when create_firestore_database is true (eur3, nam5, or a region); it cannot be changed later."
  type        = string
  default     = "eur3"
}

variable "alert_email" {
  description = "Email address for capi's alerts (empty: none)."
  type        = string
  default     = ""
}
