# What `make deploy` applies (deploy/): the capi module for the sGTM path, its state in
# a Cloud Storage bucket the deploy creates (`terraform init -backend-config=bucket=...`).
# Public function + ingest key, every alert of the module. The deploy itself creates the
# Firestore database when missing and enables the APIs (before Terraform can run), and puts
# the token and the ingest key into their secrets: no secret ever passes through Terraform.

terraform {
  required_version = ">= 1.5, < 2.0"
  backend "gcs" {}

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.40, < 7.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4, < 3.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

module "capi" {
  source = "../../terraform"

  project_id      = var.project_id
  region          = var.region
  name            = var.name
  pixel_id        = var.pixel_id
  default_country = var.default_country
  alert_email     = var.alert_email

  # The sGTM path: a tag template cannot mint Google ID tokens, so capi_events is public and
  # checks the ingest key.
  public_access     = true
  create_ingest_key = true

  # make deploy creates the database when missing (outside Terraform, so that a second run,
  # finding it, does not plan to destroy it) and enables the APIs before Terraform runs.
  create_firestore_database = false
  firestore_database        = "(default)"
  enable_apis               = false

  # make deploy's options (deploy/settings.py, OPTIONS), with the module's defaults when unset.
  browser_collection             = var.browser_collection
  browser_ttl_days               = var.browser_ttl_days
  create_shopify_signing_key     = var.create_shopify_signing_key
  create_woocommerce_signing_key = var.create_woocommerce_signing_key
  idempotency_collection         = var.idempotency_collection
  delivery                       = var.delivery
}
