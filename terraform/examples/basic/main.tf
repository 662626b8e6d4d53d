# The smallest useful deployment: one pixel, IAM-protected, profiles in the default database.
module "capi" {
  source = "../.."

  project_id        = var.project_id
  region            = var.region
  pixel_id          = var.pixel_id
  default_country   = var.default_country
  invoker_members   = var.invoker_members
  public_access     = var.public_access
  create_ingest_key = var.public_access
}

provider "google" {
  project = var.project_id
  region  = var.region
}
