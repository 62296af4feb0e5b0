#!/usr/bin/env bash
# Apply the intake dead-letter topic and retry policy to the Pub/Sub subscription that Eventarc
# created for orchestrator-pubsub's trigger. Eventarc owns that subscription, so Terraform cannot
# manage it; this script is idempotent and runs after every `terraform apply` (cloudbuild.yaml).
#
# Usage: configure_intake_dead_letter.sh [OUTPUTS_JSON]
#   OUTPUTS_JSON: `terraform output -json` saved to a file; read from terraform/ when omitted.
# Needs gcloud (authenticated) and python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $# -ge 1 ]]; then
  outputs="$(cat "$1")"
else
  outputs="$(terraform -chdir="$here" output -json)"
fi

field() {
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])["intake_dead_letter_policy"]["value"][sys.argv[2]])' \
    "$outputs" "$1"
}

project="$(field project)"
location="$(field location)"
trigger="$(field trigger)"   # projects/P/locations/L/triggers/T
trigger_id="${trigger##*/}"

subscription="$(gcloud eventarc triggers describe "$trigger_id" \
  --project="$project" --location="$location" \
  --format='value(transport.pubsub.subscription)')"
if [[ -z $subscription ]]; then
  echo "configure_intake_dead_letter: trigger $trigger has no Pub/Sub subscription" >&2
  exit 1
fi

echo "configure_intake_dead_letter: $subscription -> $(field dead_letter_topic)"
gcloud pubsub subscriptions update "$subscription" \
  --project="$project" \
  --dead-letter-topic="$(field dead_letter_topic)" \
  --max-delivery-attempts="$(field max_delivery_attempts)" \
  --min-retry-delay="$(field min_retry_delay)" \
  --max-retry-delay="$(field max_retry_delay)" \
  --quiet

# Pub/Sub moves a message to the dead-letter topic as its service agent, which must be able to
# acknowledge it here (publishing on the dead-letter topic is granted in pubsub.tf).
gcloud pubsub subscriptions add-iam-policy-binding "$subscription" \
  --project="$project" \
  --member="$(field pubsub_service_agent)" \
  --role=roles/pubsub.subscriber \
  --quiet >/dev/null
