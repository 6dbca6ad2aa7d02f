"""The children's extract payload: CSV with the kind's header and the rows the connector checked,
read again on its own with the CSV file connectors' reader (hub.fhir.rows.read_rows): the
mapping trusts the format, not the import path."""
from __future__ import annotations

CHILD_COLUMNS = ("LA_Code", "Child_Id", "UPN", "NHS_Number", "Forename", "Surname", "Date_of_Birth", "Sex", "Postcode",
                 "Continuing_Care_From")
EHC_COLUMNS = ("LA_Code", "Child_Id", "Date_of_Birth", "Request_Id", "Request_Received_Date", "Decision",
               "Decision_Date", "Advice_Date", "Draft_Plan_Date", "Assessment_Outcome", "Final_Plan_Date", "SEN_Type",
               "Placement_URN", "Placement_Type", "Last_Review_Date", "Plan_Ceased_Date")
EPISODE_COLUMNS = ("LA_Code", "Child_Id", "Episode_Id", "Episode_Type", "Start_Date", "End_Date", "Primary_Need",
                   "Legal_Status")
