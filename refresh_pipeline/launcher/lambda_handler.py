"""AWS Lambda handler, fired weekly by EventBridge: starts the refresh worker's EC2 instance.

Self-contained (boto3 only) so that deploy/cloudformation.yaml can inline it; a test keeps the two equal.
"""

import os

import boto3

HOLD_TAG = "refresh-pipeline:hold"  # a worker booted for maintenance: not started, nothing refreshed


def handler(event, context):
    """Start the worker named by WORKER_INSTANCE_ID; does nothing when it is already running or starting, or
    held for maintenance (tagged HOLD_TAG=true)."""
    instance_id = os.environ["WORKER_INSTANCE_ID"]
    ec2 = boto3.client("ec2")
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    state = instance["State"]["Name"]
    tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
    if tags.get(HOLD_TAG, "").lower() == "true":
        said = f"{instance_id} is tagged {HOLD_TAG}=true (held for maintenance): not started, no refresh this week"
        print(said)
        topic = os.environ.get("NOTIFY_TOPIC_ARN")
        if topic:  # nobody is waiting for a refresh that will not come: say so where its outcome would go
            region = topic.split(":")[3]
            boto3.client("sns", region_name=region).publish(
                TopicArn=topic, Subject="staging refresh SKIPPED (worker held)", Message=said
            )
        return {"instance_id": instance_id, "started": False, "state": state, "held": True}
    if state in ("pending", "running"):
        return {"instance_id": instance_id, "started": False, "state": state}
    if state == "stopping":
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id])
    ec2.start_instances(InstanceIds=[instance_id])
    return {"instance_id": instance_id, "started": True, "state": "pending"}
