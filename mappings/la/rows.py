"""The envelope payload the LA connector publishes: CSV with the kind's header and the rows
it checked, read again by the mapping with hub.fhir.rows.read_rows (it must not trust the
connector's import path, only its format)."""
from __future__ import annotations

_DETAILS = ("NHS_Number", "Given_Name", "Family_Name", "Date_of_Birth", "Gender", "Postcode")
PERSON_COLUMNS = ("LA_Code", "LA_Person_Unique_Identifier", *_DETAILS, "Date_of_Death")
CARER_COLUMNS = ("LA_Code", "Carer_LA_Person_Unique_Identifier", "Cared_For_LA_Person_Unique_Identifier",
                 "Relationship_To_Cared_For", "Carer_Assessed", "Carer_Assessment_Date", *_DETAILS)
EVENT_COLUMNS = ("LA_Code", "Event_Reference", "LA_Person_Unique_Identifier", "Client_Type", "Event_Type",
                 "Event_Start_Date", "Event_End_Date", "Event_Outcome", "Service_Type", "Service_Component",
                 "Delivery_Mechanism", "Unit_Cost", "Cost_Frequency_Unit_Type", "Planned_units_per_week")
