# The smallest useful deployment: one pixel, IAM-protected (or public with an ingest key),
# profiles and dead letters in the default Firestore database, alerts by email.
module "capi" {
  source = "../.."

  project_id                = var.project_id
  region                    = var.region
  pixel_id                  = var.pixel_id
  destinations              = var.destinations
  default_country           = var.default_country
  invoker_members           = var.invoker_members
  public_access             = var.public_access
  create_ingest_key         = var.public_access
  create_firestore_database = var.create_firestore_database
  firestore_location        = var.firestore_location
  alert_email               = var.alert_email
}

provider "google" {
  project = var.project_id
  region  = var.region
}
