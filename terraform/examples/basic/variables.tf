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
  description = "Meta pixel / dataset id."
  type        = string
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
