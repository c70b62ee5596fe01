locals {
  bucket_name = coalesce(var.bucket_name, "${var.name}-files-${data.aws_caller_identity.current.account_id}")
  # Encore's own rule ids (flows/storage.py ensure_lifecycle), so that running it changes nothing.
  storage_base = var.storage_prefix == "" ? "" : "${trim(var.storage_prefix, "/")}/"
  storage_url  = "s3://${aws_s3_bucket.files.bucket}${var.storage_prefix == "" ? "" : "/${trim(var.storage_prefix, "/")}"}"
}

resource "aws_s3_bucket" "files" {
  bucket        = local.bucket_name
  force_destroy = var.force_destroy
}

resource "aws_s3_bucket_public_access_block" "files" {
  bucket = aws_s3_bucket.files.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "files" {
  bucket = aws_s3_bucket.files.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "files" {
  bucket = aws_s3_bucket.files.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# Versioning stays off: stems and scratch files are recomputable, and versions would keep
# every expired object around.
resource "aws_s3_bucket_versioning" "files" {
  bucket = aws_s3_bucket.files.id

  versioning_configuration {
    status = "Disabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "files" {
  bucket = aws_s3_bucket.files.id

  rule {
    id     = "encore-tmp-expiry:${local.storage_base}"
    status = "Enabled"

    filter {
      prefix = "${local.storage_base}tmp/"
    }

    expiration {
      days = var.tmp_expiry_days
    }
  }

  rule {
    id     = "encore-abort-multipart:${local.storage_base}"
    status = "Enabled"

    filter {
      prefix = local.storage_base
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

resource "aws_s3_bucket_policy" "files_tls_only" {
  bucket = aws_s3_bucket.files.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.files.arn, "${aws_s3_bucket.files.arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })

  depends_on = [aws_s3_bucket_public_access_block.files]
}

# --- container images ----------------------------------------------------------------------

resource "aws_ecr_repository" "app" {
  name                 = "${var.name}/app"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.force_destroy

  image_scanning_configuration {
    scan_on_push = true
  }
}

resource "aws_ecr_repository" "gpu" {
  name                 = "${var.name}/gpu"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.force_destroy

  image_scanning_configuration {
    scan_on_push = true
  }
}

resource "aws_ecr_lifecycle_policy" "keep_recent" {
  for_each   = { app = aws_ecr_repository.app.name, gpu = aws_ecr_repository.gpu.name }
  repository = each.value

  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the 10 newest images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 10
      }
      action = { type = "expire" }
    }]
  })
}
