import factory

from agents.models import Execution, Workflow
from customers.models import Customer


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Customer {n}")
    slug = factory.Sequence(lambda n: f"customer-{n}")


class WorkflowFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workflow
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"workflow-{n}")
    name = factory.Sequence(lambda n: f"Workflow {n}")
    model = "claude-sonnet-4-6"
    max_turns = 5
    allowed_tools = factory.LazyFunction(lambda: ["Read", "Glob", "Grep"])


class ExecutionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Execution

    customer = factory.SubFactory(CustomerFactory)
    workflow = factory.SubFactory(WorkflowFactory)
    prompt = "Review the change."
    requested_model = factory.LazyAttribute(lambda execution: execution.workflow.model)
