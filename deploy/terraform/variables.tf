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
