# Network of the ECS deployment: security groups, the internal load balancer in front of the UI and
# the private DNS name of the code location. Nothing here is reachable from the internet.
#
#   allowed CIDRs -> alb (80/443) -> webserver (3000) -> code location (4000, gRPC)
#   daemon and runs (one security group: every run starts in the daemon's network, EcsRunLauncher's
#   use_current_ecs_task_config) -> code location (4000)
#   webserver, daemon, runs, code location -> Dagster's PostgreSQL (5432)

locals {
  ecs = var.ecs_enabled ? 1 : 0

  # HTTPS when a certificate is given; otherwise HTTP inside the VPC only.
  webserver_listener_port = var.webserver_certificate_arn == "" ? 80 : 443

  code_location_port = 4000
  webserver_port     = 3000
}

resource "aws_security_group" "alb" {
  #checkov:skip=CKV_AWS_382:Egress is limited to the VPC's private addresses (the webserver targets); see the rule.
  count = local.ecs

  name        = "${local.name}-ui-alb"
  description = "Internal load balancer of the Dagster UI: only the allowed networks may connect."
  vpc_id      = var.vpc_id

  ingress {
    description = "Dagster UI from the allowed networks only"
    from_port   = local.webserver_listener_port
    to_port     = local.webserver_listener_port
    protocol    = "tcp"
    cidr_blocks = var.webserver_allowed_cidrs
  }

  egress {
    description = "To the webserver tasks"
    from_port   = local.webserver_port
    to_port     = local.webserver_port
    protocol    = "tcp"
    cidr_blocks = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
  }
}

resource "aws_security_group" "webserver" {
  #checkov:skip=CKV_AWS_382:Egress to AWS APIs (S3 step logs, ECS), the code location and PostgreSQL, whose addresses are not fixed.
  count = local.ecs

  name        = "${local.name}-webserver"
  description = "Dagster webserver tasks: reachable from the UI load balancer only."
  vpc_id      = var.vpc_id

  ingress {
    description     = "UI traffic from the internal load balancer"
    from_port       = local.webserver_port
    to_port         = local.webserver_port
    protocol        = "tcp"
    security_groups = [aws_security_group.alb[0].id]
  }

  egress {
    description = "AWS APIs, the code location and Dagster's PostgreSQL"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "runs" {
  #checkov:skip=CKV_AWS_382:Runs reach totesys, the warehouse, SMTP and AWS APIs, whose addresses live outside this configuration.
  count = local.ecs

  name        = "${local.name}-daemon-and-runs"
  description = "Dagster daemon and every run task (runs inherit the daemon's network). No inbound traffic."
  vpc_id      = var.vpc_id

  egress {
    description = "Source and warehouse databases, SMTP, AWS APIs, the code location"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "code_location" {
  #checkov:skip=CKV_AWS_382:The code location's sensors read totesys and AWS APIs, whose addresses live outside this configuration.
  count = local.ecs

  name        = "${local.name}-code-location"
  description = "Dagster gRPC code server: reachable from the webserver and the daemon only."
  vpc_id      = var.vpc_id

  ingress {
    description     = "gRPC from the webserver and the daemon"
    from_port       = local.code_location_port
    to_port         = local.code_location_port
    protocol        = "tcp"
    security_groups = [aws_security_group.webserver[0].id, aws_security_group.runs[0].id]
  }

  egress {
    description = "totesys (new-data sensor), Dagster's PostgreSQL, AWS APIs"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# --- internal load balancer of the UI ---------------------------------------------------------------

resource "aws_lb" "webserver" {
  #checkov:skip=CKV2_AWS_20:With a certificate there is only the HTTPS listener (nothing to redirect); without one, only HTTP inside the VPC (see aws_lb_listener.webserver_http).
  #checkov:skip=CKV_AWS_91:No access logs: the load balancer is internal and reachable only from webserver_allowed_cidrs; an access-log bucket would be one more bucket to secure and pay for.
  #checkov:skip=CKV2_AWS_28:No WAF: internal load balancer, not reachable from the internet.
  count = local.ecs

  name                       = "${local.name}-ui"
  internal                   = true
  load_balancer_type         = "application"
  subnets                    = var.private_subnet_ids
  security_groups            = [aws_security_group.alb[0].id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  # The UI streams run logs over long-lived requests.
  idle_timeout = 300
}

resource "aws_lb_target_group" "webserver" {
  #checkov:skip=CKV_AWS_378:Load balancer to webserver inside the VPC is HTTP: TLS ends at the load balancer (when webserver_certificate_arn is set); the webserver serves no TLS itself.
  count = local.ecs

  name        = "${local.name}-ui"
  port        = local.webserver_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  # The webserver has no state of its own to drain.
  deregistration_delay = 30

  health_check {
    path                = "/server_info"
    matcher             = "200"
    interval            = 30
    timeout             = 10
    healthy_threshold   = 2
    unhealthy_threshold = 5
  }
}

resource "aws_lb_listener" "webserver_https" {
  count = var.ecs_enabled && var.webserver_certificate_arn != "" ? 1 : 0

  load_balancer_arn = aws_lb.webserver[0].arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.webserver_certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.webserver[0].arn
  }
}

resource "aws_lb_listener" "webserver_http" {
  #checkov:skip=CKV_AWS_2:Plain HTTP only when no certificate is configured: internal load balancer in private subnets, reachable only from webserver_allowed_cidrs. Set webserver_certificate_arn for HTTPS.
  #checkov:skip=CKV_AWS_103:As above: this listener exists only without a certificate; the HTTPS listener enforces TLS 1.2+.
  count = var.ecs_enabled && var.webserver_certificate_arn == "" ? 1 : 0

  load_balancer_arn = aws_lb.webserver[0].arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.webserver[0].arn
  }
}

# --- private DNS name of the code location (deploy/workspace.ecs.yaml reads it) ----------------------

resource "aws_service_discovery_private_dns_namespace" "dagster" {
  count = local.ecs

  name        = "${local.name}.dagster.internal"
  description = "Private names of the totesys-platform Dagster services."
  vpc         = var.vpc_id
}

resource "aws_service_discovery_service" "code_location" {
  count = local.ecs

  name = "code-location"

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.dagster[0].id
    routing_policy = "MULTIVALUE"

    dns_records {
      ttl  = 10
      type = "A"
    }
  }
}
